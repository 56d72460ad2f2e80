"""``python -m runtime.server`` as a process: help, OpenAPI, serving, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runtime.server.openapi import COMMITTED_SPEC
from tests.runtime.test_chat import SEED_BASIC, SEED_HEADERS
from tests.support.procs import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.server", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_and_openapi() -> None:
    help_run = run_cli("--help")
    assert help_run.returncode == 0
    assert "--adapter NAME[=STRENGTH]" in help_run.stdout
    spec_run = run_cli("--print-openapi")
    assert spec_run.returncode == 0
    assert json.loads(spec_run.stdout) == json.loads(COMMITTED_SPEC.read_text(encoding="utf-8"))


def test_bad_option_exits_2() -> None:
    result = run_cli("--port", "0")
    assert result.returncode == 2
    assert "--port='0': below the minimum 1; use a value from 1 to 65535" in result.stderr
    bad_number = run_cli("--max-num-seqs", "many")
    assert bad_number.returncode == 2
    assert "--max-num-seqs='many': not a whole number" in bad_number.stderr


@pytest.mark.slow
def test_a_model_that_cannot_load_exits_1(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a folder, but no model in it
    result = run_cli("--model", str(tmp_path), "--port", str(free_port()))
    assert result.returncode == 1
    assert "--model" in result.stderr
    assert "--allow-download" in result.stderr  # offline by default, and says how to change it


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_model_folder_without_the_model_is_refused_before_start(
    tmp_path: Path, make: str
) -> None:
    """The private preset image rule: an absolute --model must be a model folder; otherwise
    exit 3 with the convention in the message, on stderr and in the termination log."""
    folder = tmp_path / "workspace" / "weights"
    if make == "empty":
        folder.mkdir(parents=True)
    log = tmp_path / "termination-log"
    result = run_cli("--model", str(folder), "--termination-log", str(log))
    assert result.returncode == 3, result.stderr
    expected = "no such folder" if make == "missing" else "the folder has no config.json"
    message = log.read_text()
    assert f"--model {folder}: {expected}" in message
    assert "at /workspace/weights" in message
    assert message.strip() in result.stderr


@pytest.mark.slow
def test_serves_the_seed_request_and_stops_on_sigterm(tiny_model: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.server",
            "--model",
            str(tiny_model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:

            def healthy() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            def running() -> None:
                assert process.poll() is None, "the server exited while loading"

            wait_until(healthy, 180, "the server to become healthy", check=running)
            response = client.post("/chat", content=SEED_BASIC.encode(), headers=SEED_HEADERS)
            assert response.status_code == 200
            assert response.json()["Result"].startswith("YOUR_PROMPT_HERE")
            assert client.get("/v1/models").json()["data"][0]["id"] == tiny_model.name
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        for stage in ("loading tokenizer", "loading weights", "model ready", "listening on"):
            assert stage in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
