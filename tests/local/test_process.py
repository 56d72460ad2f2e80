"""``reconciler.local.process.Child`` with small real children: readiness, timeouts, failures,
and the stop signals forwarded (handlers restored afterwards)."""

from __future__ import annotations

import os
import signal
import sys

from reconciler.local.process import Child
from tests.local.procs import port_free
from tests.support.procs import free_port


def test_ready_then_ctrl_c_stops_the_child() -> None:
    port = free_port()
    events: list[str] = []
    child = Child(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], env=os.environ
    )
    before = signal.getsignal(signal.SIGINT)

    def ready() -> None:
        events.append("ready")
        os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C does to this process

    outcome = child.run(f"http://127.0.0.1:{port}/", ready_timeout_s=60, on_ready=ready)
    assert events == ["ready"]
    assert (outcome.code, outcome.ready, outcome.stopped) == (0, True, True)
    assert outcome.child_code == -signal.SIGTERM  # forwarded as SIGTERM
    assert signal.getsignal(signal.SIGINT) is before
    assert port_free(port)


def test_a_child_that_never_gets_healthy_is_stopped_after_the_timeout() -> None:
    events: list[str] = []
    child = Child([sys.executable, "-c", "import time; time.sleep(60)"], env=os.environ)
    outcome = child.run(
        f"http://127.0.0.1:{free_port()}/health",
        ready_timeout_s=1,
        on_ready=lambda: events.append("ready"),
        on_timeout=lambda: events.append("timeout"),
    )
    assert events == ["timeout"]
    assert (outcome.code, outcome.ready, outcome.stopped) == (1, False, False)
    assert child.popen is not None
    assert child.popen.poll() is not None


def test_a_child_that_fails_gives_its_status() -> None:
    child = Child([sys.executable, "-c", "raise SystemExit(3)"], env=os.environ)
    outcome = child.run(
        f"http://127.0.0.1:{free_port()}/health", ready_timeout_s=60, on_ready=lambda: None
    )
    assert (outcome.code, outcome.ready, outcome.stopped, outcome.child_code) == (
        3,
        False,
        False,
        3,
    )
