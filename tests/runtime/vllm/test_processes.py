"""Running a plan: the front in front of a child server, signals, Ray retries and waits.

vLLM cannot run on this CPU build, so the child is a small aiohttp server standing in for
``vllm serve`` (the front and the process handling are what is under test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from runtime.vllm.errors import LauncherError
from runtime.vllm.plan import LaunchPlan
from runtime.vllm.processes import run_worker, wait_for_nodes
from runtime.vllm.sizing import Sizing
from tests.runtime.vllm.probe import ROOT
from tests.support.procs import free_port

SIZING = Sizing("float16", 1, 1, 0, 0, 0, 1, 1, 1)

CHILD = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def health(request):
        return web.json_response({"child": True})

    app = web.Application()
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)

RUNNER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from runtime.vllm.plan import LaunchPlan
    from runtime.vllm.processes import run_plan
    from runtime.vllm.settings import parse_settings
    from runtime.vllm.sizing import Sizing

    spec = json.loads(sys.argv[1])
    settings = parse_settings(spec["argv"], {})
    plan = LaunchPlan("single", "m", tuple(spec["child"]), (), 1, Sizing(*spec["sizing"]), ("m",))
    sys.exit(run_plan(plan, settings))
    """
)


def test_front_serves_until_the_child_ends_and_forwards_sigterm(tmp_path: Path) -> None:
    port, child_port = free_port(), free_port()
    spec = {
        "argv": [
            "--preset",
            "x",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--vllm-port",
            str(child_port),
        ],
        "child": [sys.executable, "-c", CHILD, str(child_port)],
        "sizing": list(SIZING.__dict__.values())[:-1],
    }
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(spec)], cwd=ROOT, env={**os.environ}
    )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                break
            time.sleep(0.2)
        assert answer is not None
        assert answer.json() == {"child": True}  # proxied to the child
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{child_port}/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _worker_plan(argv: list[str]) -> LaunchPlan:
    return LaunchPlan("worker", "m", (), tuple(argv), 2, SIZING, ("m",))


def test_worker_retries_until_the_head_answers(tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
        "sys.exit(0 if n >= 3 else 1)"
    )
    assert run_worker(_worker_plan([sys.executable, "-c", script, str(counter)]), 60, 0.01) == 0
    assert counter.read_text() == "3"
    assert run_worker(_worker_plan([sys.executable, "-c", "raise SystemExit(7)"]), 0, 0.01) == 7
    with pytest.raises(LauncherError, match="not installed"):
        run_worker(_worker_plan(["/nonexistent/ray", "start"]), 0, 0.01)


def test_leader_gives_up_waiting_for_nodes() -> None:
    with pytest.raises(LauncherError, match=r"only 0 of 2 nodes joined the Ray cluster in 0 s"):
        wait_for_nodes(2, 0, 0.01)


WORKER = textwrap.dedent(
    """
    import json, sys
    from runtime.vllm.plan import LaunchPlan
    from runtime.vllm.processes import run_worker
    from runtime.vllm.sizing import Sizing

    ray = (sys.executable, "-c", sys.argv[2], sys.argv[3])
    plan = LaunchPlan("worker", "m", (), ray, 2, Sizing(*json.loads(sys.argv[4])), ("m",))
    sys.exit(run_worker(plan, 120, 0.2, listen=("127.0.0.1", int(sys.argv[1]))))
    """
)


def _health(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_worker_pod_answers_health_while_its_ray_node_runs(tmp_path: Path) -> None:
    """Multi-node Pods share one template and so one set of probes: a worker must answer them."""
    port = free_port()
    gate = tmp_path / "head-is-up"
    # Stands in for `ray start --address=... --block`: fails fast until the head is "up", then
    # blocks like a joined Ray node.
    ray = (
        "import pathlib, sys, time\n"
        "if not pathlib.Path(sys.argv[1]).exists(): sys.exit(1)\n"
        "time.sleep(600)\n"
    )
    sizing = json.dumps(list(SIZING.__dict__.values())[:-1])
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(port), ray, str(gate), sizing], cwd=ROOT
    )
    try:
        # Retrying: the head is not reachable yet. Between two tries the stand-in's process is
        # briefly alive (200) while it starts, which a loaded machine stretches: poll for 503.
        deadline = time.monotonic() + 60
        seen = _health(port)
        while seen != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _health(port)
        assert seen == 503
        gate.write_text("up")
        deadline = time.monotonic() + 60
        while _health(port) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _health(port) == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["role"] == "worker"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert _health(port) is None  # the health server stopped with the Ray node
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
