"""Calling ``vllm_probe`` in a child process (vLLM's platform is chosen once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def run_probe(request: dict[str, Any], timeout_s: float = 600, *, offline: bool = True) -> Any:
    """Offline, vLLM resolves hub ids in the local cache (and fails): parsing hub ids needs
    ``offline=False``, which touches no network as long as nothing is loaded."""
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_LOGGING_LEVEL": "ERROR",
        "PYTHONWARNINGS": "ignore",
    }
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if offline:
            env[key] = "1"
        else:
            env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.vllm.vllm_probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
