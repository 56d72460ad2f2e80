"""The dev kit's process helpers, on real processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.support.procs import (
    Proc,
    ProcExited,
    WaitTimeout,
    flocked,
    free_port,
    python_env,
    wait_until,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ", 1)[-1][:1] != "Z"


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(values), 10, "a value", every=0.01) == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the moon; last: \[\]") as info:
        wait_until(list, 0, "the moon")
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, TimeoutError)


def test_wait_until_gives_up_when_the_check_raises() -> None:
    def dead() -> None:
        raise ProcExited("x exited with status 1")

    with pytest.raises(ProcExited):
        wait_until(lambda: False, 600, "never", check=dead)


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_logged_process_keeps_its_output_and_exit_status(tmp_path: Path) -> None:
    code = "import sys; print('hello'); sys.exit(3)"
    proc = Proc("p", [sys.executable, "-c", code], log=tmp_path / "logs" / "p.log").start()
    assert proc.wait(60) == 3
    assert proc.lines == ["hello"]
    assert (tmp_path / "logs" / "p.log").read_text() == "hello\n"
    with pytest.raises(ProcExited, match="p exited with status 3"):
        proc.check_alive()


def test_a_piped_process_with_stdin_and_a_line_to_wait_for(tmp_path: Path) -> None:
    code = "import sys; print('got', sys.stdin.read().strip(), flush=True); input()"
    proc = Proc("p", [sys.executable, "-c", code], stdin="word", env=python_env()).start()
    try:
        assert proc.wait_line("got", 60) == "got word"
        assert proc.wait(60) != 0  # input() meets the end of stdin
    finally:
        proc.stop()


def test_wait_line_fails_when_the_process_exits_first() -> None:
    proc = Proc("quiet", [sys.executable, "-c", "print('other')"]).start()
    with pytest.raises(ProcExited, match="quiet exited with 0 before 'never'"):
        proc.wait_line("never", 60)


def test_stop_sends_sigterm_then_sigkill(tmp_path: Path) -> None:
    polite = Proc("polite", [sys.executable, "-c", "import time; time.sleep(600)"]).start()
    assert polite.stop() == -signal.SIGTERM
    stubborn_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(600)"
    )
    stubborn = Proc("stubborn", [sys.executable, "-c", stubborn_code]).start()
    stubborn.wait_line("ignoring", 60)
    assert stubborn.stop(timeout=0.2) == -signal.SIGKILL
    assert stubborn.stop() == -signal.SIGKILL  # stopping again only reports


def test_a_process_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent-death signal: a Proc's child dies when the process that started it is killed,
    even by SIGKILL (no cleanup ran)."""
    parent_code = (
        "import sys, time; from tests.support.procs import Proc; "
        "child = Proc('child', [sys.executable, '-c', 'import time; time.sleep(600)']).start(); "
        "print(child.pid, flush=True); time.sleep(600)"
    )
    parent = Proc("parent", [sys.executable, "-c", parent_code], env=python_env()).start()
    child_pid = 0
    try:
        child_pid = int(wait_until(lambda: next(iter(parent.lines), None), 60, "the child's pid"))
        assert _pid_alive(child_pid)
        parent.kill()
        wait_until(lambda: not _pid_alive(child_pid), 30, f"child {child_pid} to die")
    finally:
        parent.kill()
        if child_pid and _pid_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_flocked_waits_for_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "cache" / ".lock"
    waited = threading.Event()
    acquired = threading.Event()

    def second() -> None:
        with flocked(lock, waited.set):
            acquired.set()

    with flocked(lock):
        thread = threading.Thread(target=second)
        thread.start()
        wait_until(waited.is_set, 30, "the second holder to wait")
        assert not acquired.is_set()
    thread.join(30)
    assert acquired.is_set()


def test_an_echoed_process_prints_its_lines_and_logs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "echo.log"
    proc = Proc("e", [sys.executable, "-c", "print('one'); print('two')"], log=log, echo="  | ")
    assert proc.start().wait(60) == 0
    assert proc.lines == ["one", "two"]
    assert log.read_text() == "one\ntwo\n"
    assert capsys.readouterr().out == "  | one\n  | two\n"
