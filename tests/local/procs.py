"""Process helpers for the local-run and demo tests: a command as a real process, tagged with
an environment marker so that every descendant can be found afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import Proc, python_env, python_module, wait_until

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
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not tagged(marker), timeout, f"no process tagged {marker}")
    return tagged(marker)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Command(Proc):
    """``python -m MODULE ARGS`` from the repository root, as a user runs it (in this session, so
    that it gets the signals a terminal sends), output collected line by line, tagged."""

    def __init__(self, module: str, args: Sequence[str], *, stdin: str | None = None) -> None:
        self.marker = uuid.uuid4().hex
        super().__init__(
            module,
            python_module(module, *args),
            env=python_env({MARKER: self.marker}),
            stdin=stdin,
            session=False,
        )

    @property
    def output(self) -> str:
        return self.text()

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
    cmd = Command(module, args, stdin=stdin)
    cmd.start()
    cmd.wait(timeout)
    return cmd
