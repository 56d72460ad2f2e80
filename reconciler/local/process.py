"""The runtime as a child process: start, wait for ``/health``, forward Ctrl-C and SIGTERM.

The child runs in its own session (so a terminal's Ctrl-C reaches only this process, which
forwards SIGTERM and waits for a clean exit) with a parent-death signal (so it never outlives
this process, even after a SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends ``sig`` to the child when its parent dies.

    It runs in the child between fork and exec, so it only makes the ``prctl`` call.
    """

    def preexec() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (a wildcard host: on the loopback address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1" if host in ("0.0.0.0", "::") else host, 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = 2.0) -> bool:
    """``GET url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Outcome:
    code: int
    """The exit status for this command: 0 after a requested stop, else the child's (or 1)."""
    ready: bool
    stopped: bool
    """A stop was requested (Ctrl-C or SIGTERM)."""
    child_code: int | None


class Child:
    """One runtime process, stopped on Ctrl-C/SIGTERM to this process."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        grace_s: float = 30.0,
        poll_s: float = 0.25,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.stop_requested = threading.Event()
        self.popen: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested.set()
        self._terminate()

    def _terminate(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)

    def run(
        self,
        health_url: str,
        *,
        ready_timeout_s: float,
        on_ready: Callable[[], None],
        on_timeout: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Start the child, call ``on_ready`` once ``health_url`` answers 200, then wait."""
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            return self._run(health_url, ready_timeout_s, on_ready, on_timeout)
        finally:
            self._terminate()
            self._reap()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _run(
        self,
        health_url: str,
        ready_timeout_s: float,
        on_ready: Callable[[], None],
        on_timeout: Callable[[], None],
    ) -> Outcome:
        if self.stop_requested.is_set():  # stopped before it started
            return Outcome(0, False, True, None)
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only a prctl call
        )
        deadline = time.monotonic() + ready_timeout_s
        ready = False
        while not self.stop_requested.is_set() and self.popen.poll() is None:
            if healthy(health_url):
                ready = True
                break
            if time.monotonic() > deadline:
                on_timeout()
                self._terminate()
                self._reap()
                return Outcome(1, False, False, self.popen.returncode)
            self.stop_requested.wait(self.poll_s)
        if ready and not self.stop_requested.is_set():
            on_ready()
        while not self.stop_requested.is_set() and self.popen.poll() is None:
            self.stop_requested.wait(self.poll_s)
        self._terminate()
        code = self._reap()
        if self.stop_requested.is_set():
            clean = code in (0, -signal.SIGTERM, -signal.SIGINT)
            return Outcome(0 if clean else 1, ready, True, code)
        return Outcome(1 if code is None or code < 0 else code, ready, False, code)

    def _reap(self) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(10)
