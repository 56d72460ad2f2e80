"""The dev kit's process helpers, one of each.

* ``free_port(host)`` and ``die_with_parent(sig)``: the product's (``reconciler.local.process``),
  re-exported here so that tests, the demo and the benchmarks import them from one place;
* ``wait_until(fn, timeout, what)``: poll until ``fn`` returns something truthy, bounded, failing
  with ``WaitTimeout`` that names what was awaited and the last value seen;
* ``flocked(path, on_wait)``: hold an exclusive lock on a file shared with other processes;
* ``Proc``: one command as a real process (its own session, a parent-death signal, so it never
  outlives the test run), its output in a log file or in memory, stopped with SIGTERM and then
  SIGKILL, its exit status kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Self, TypeVar

from reconciler.local.process import die_with_parent, free_port

__all__ = [
    "ROOT",
    "Proc",
    "ProcExited",
    "WaitTimeout",
    "die_with_parent",
    "flocked",
    "free_port",
    "python_env",
    "python_module",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the working directory and ``PYTHONPATH`` of our commands."""

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """``wait_until`` gave up. An ``AssertionError`` (a test fails, it does not error) and a
    ``TimeoutError`` (what callers that retry catch)."""


class ProcExited(RuntimeError):
    """A process that should be running has exited."""


def wait_until(
    fn: Callable[[], T | None],
    timeout: float = 60,
    what: str = "condition",
    *,
    every: float = 0.2,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``fn`` until it returns something truthy and return that; at most ``timeout`` seconds.

    ``check`` runs before each call and may raise to give up early (a process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(every)


@contextlib.contextmanager
def flocked(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder); when another process
    holds it, call ``on_wait`` (to say so) and wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def python_module(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def python_env(
    extra: Mapping[str, str] | None = None, *, drop_prefix: str | None = None
) -> dict[str, str]:
    """This environment (less the variables starting with ``drop_prefix``), with ``extra`` and the
    repository root as ``PYTHONPATH``."""
    env = {
        k: v for k, v in os.environ.items() if drop_prefix is None or not k.startswith(drop_prefix)
    }
    return {**env, **(extra or {}), "PYTHONPATH": str(ROOT)}


class Proc:
    """One command as a real process.

    Output: with ``log`` alone, the process writes it straight to that file; with ``echo`` (a
    prefix: each line is printed to the console too) or without ``log``, a thread reads it and
    keeps the lines in memory (and appends them to ``log`` when given).

    With ``session`` (the default) the process gets its own session and a SIGKILL when this
    process dies, so neither a terminal's Ctrl-C nor a killed test run leaves it behind.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        echo: str | None = None,
        stdin: str | None = None,
        session: bool = True,
        grace_s: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.echo = echo
        self.stdin = stdin
        self.session = session
        self.grace_s = grace_s
        """How long ``stop()`` waits after SIGTERM before SIGKILL."""
        self.popen: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def piped(self) -> bool:
        return self.log is None or self.echo is not None

    def start(self) -> Self:
        with contextlib.ExitStack() as stack:
            out: IO[bytes] | int = subprocess.PIPE
            if not self.piped:
                assert self.log is not None
                self.log.parent.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(open(self.log, "ab"))
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.session,
                preexec_fn=die_with_parent(signal.SIGKILL) if self.session else None,  # noqa: PLW1509 - only a prctl call
            )
        if self.stdin is not None:
            assert self.popen.stdin is not None
            with self.popen.stdin:
                self.popen.stdin.write(self.stdin.encode())
        if self.piped:
            self._reader = threading.Thread(target=self._read, name=f"log-{self.name}", daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.popen.stdout)
            fh = stack.enter_context(open(self.log, "a", encoding="utf-8")) if self.log else None
            for raw in self.popen.stdout:
                line = raw.decode(errors="replace")
                if fh is not None:
                    fh.write(line)
                    fh.flush()
                self._lines.append(line.rstrip("\n"))
                if self.echo is not None:
                    print(f"{self.echo}{line.rstrip()}", flush=True)

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int:
        assert self.popen is not None, "start() first"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise ``ProcExited`` when the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcExited(f"{self.name} exited with status {self.popen.returncode}")

    @property
    def lines(self) -> list[str]:
        """The output so far, line by line."""
        if self.piped:
            return list(self._lines)
        return self.text().splitlines()

    def text(self) -> str:
        """The output so far."""
        if self.piped:
            return "\n".join(self._lines)
        assert self.log is not None
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def peak_rss_kib(self) -> int:
        """The process's peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first output line starting with ``prefix``; fails if the process exits first."""

        def found() -> str | None:
            return next((line for line in self.lines if line.startswith(prefix)), None)

        def running() -> None:
            if not self.alive():
                self._join()  # the reader has read everything
                line = found()
                if line is None:
                    raise ProcExited(
                        f"{self.name} exited with {self.returncode} before {prefix!r}:\n"
                        + self.text()
                    )

        return wait_until(
            found, timeout, f"a line {prefix!r} from {self.name}", every=0.1, check=running
        )

    # ------------------------------------------------------------------ signals

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL to the process (its whole session when it has one), as in a crash."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.session:
                os.killpg(self.popen.pid, signal.SIGKILL)
            else:
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def wait(self, timeout: float) -> int:
        """The exit status; a process still running after ``timeout`` is killed and fails."""
        assert self.popen is not None, "start() first"
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WaitTimeout(
                f"{self.name} still running after {timeout:g}s:\n{self.text()}"
            ) from None
        self._join()
        return code

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (to the process group with ``session``), then SIGKILL after ``timeout``
        (default ``grace_s``); the exit status (None: never started)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):  # a stopped process cannot handle TERM
                with contextlib.suppress(ProcessLookupError):
                    if self.session:  # and whatever it started in its process group
                        os.killpg(self.popen.pid, sig)
                    else:
                        self.popen.send_signal(sig)
            try:
                self.popen.wait(self.grace_s if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join()
        return self.popen.returncode

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
