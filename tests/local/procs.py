"""Process helpers for the local-run and demo tests: a command as a real process, tagged with
an environment marker so that every descendant can be found afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "KAITO_PY_TEST_RUN"
"""Every process started by a command under test inherits ``MARKER=<id>``."""


def tagged(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_none_tagged(marker: str, timeout: float = 15.0) -> list[int]:
    """Poll until no tagged process is left; returns what is still there."""
    deadline = time.monotonic() + timeout
    left = tagged(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tagged(marker)
    return left


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Command:
    """``python -m MODULE ARGS`` from the repository root, output collected line by line."""

    def __init__(self, module: str, args: Sequence[str], *, stdin: str | None = None) -> None:
        self.marker = uuid.uuid4().hex
        self.argv = [sys.executable, "-m", module, *args]
        self.env = {**os.environ, MARKER: self.marker, "PYTHONPATH": str(ROOT)}
        self.stdin = stdin
        self.lines: list[str] = []
        self.popen: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Command:
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE if self.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        if self.stdin is not None:
            assert self.popen.stdin is not None
            self.popen.stdin.write(self.stdin)
            self.popen.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first output line starting with ``prefix``; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.popen is not None and self.popen.poll() is not None:
                time.sleep(0.2)  # let the reader catch up
                for line in list(self.lines):
                    if line.startswith(prefix):
                        return line
                raise AssertionError(
                    f"exited with {self.popen.returncode} before {prefix!r}:\n{self.output}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no line {prefix!r} after {timeout}s:\n{self.output}")

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None
        if self._reader is not None:
            self._reader.join(10)
        return code

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """Last resort after a failed test: every tagged process."""
        for pid in tagged(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)


def run(
    module: str, args: Sequence[str], *, stdin: str | None = None, timeout: float = 120
) -> Command:
    """Run a command to its end."""
    cmd = Command(module, args, stdin=stdin).start()
    cmd.wait(timeout)
    return cmd
