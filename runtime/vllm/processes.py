"""Running a launch plan: Ray head or worker, vLLM, and the /chat front. The only I/O with
processes and sockets in the launcher."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from runtime.vllm.errors import LauncherError
from runtime.vllm.front import FrontSettings, make_app
from runtime.vllm.plan import LaunchPlan
from runtime.vllm.settings import LauncherSettings

log = logging.getLogger("runtime.vllm")

RETRY_S = 5.0

_COUNT_NODES = (
    "import ray; ray.init(address='auto', logging_level='ERROR'); "
    "print(sum(1 for n in ray.nodes() if n['Alive']))"
)


def vocab_size(model_dir: Path) -> int | None:
    """The vocabulary size in the model folder's config.json (None if not there)."""
    try:
        value = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def alive_ray_nodes() -> int:
    """How many Ray nodes the local head sees (0 if it cannot be asked)."""
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_NODES], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0


def wait_for_nodes(count: int, timeout_s: float, retry_s: float = RETRY_S) -> None:
    """Block until the Ray head sees ``count`` live nodes; ``LauncherError`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while (alive := alive_ray_nodes()) < count:
        if time.monotonic() > deadline:
            raise LauncherError(
                f"only {alive} of {count} nodes joined the Ray cluster in {timeout_s:g} s; check "
                "that the worker Pods run and can reach the leader through the headless Service"
            )
        log.info("waiting for Ray nodes: %d of %d", alive, count)
        time.sleep(retry_s)


def start_ray_head(plan: LaunchPlan) -> None:
    try:
        code = subprocess.call(list(plan.ray_argv))
    except FileNotFoundError:
        raise LauncherError(
            f"{plan.ray_argv[0]!r} is not installed in this image; multi-node inference needs "
            "Ray (pip install 'vllm[ray]' or ray)"
        ) from None
    if code != 0:
        raise LauncherError(f"{' '.join(plan.ray_argv)} failed with exit status {code}")


def run_worker(plan: LaunchPlan, timeout_s: float, retry_s: float = RETRY_S) -> int:
    """Join the leader's Ray head and block; retry while the leader is not up yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            code = subprocess.call(list(plan.ray_argv))
        except FileNotFoundError:
            raise LauncherError(
                f"{plan.ray_argv[0]!r} is not installed in this image; multi-node inference "
                "needs Ray (pip install 'vllm[ray]' or ray)"
            ) from None
        if code == 0 or time.monotonic() > deadline:
            return code
        log.info("the Ray head is not reachable yet (exit %d); retrying", code)
        time.sleep(retry_s)


async def serve_with_front(plan: LaunchPlan, settings: LauncherSettings) -> int:
    """vLLM on 127.0.0.1:<vllm port> and the /chat front on <host>:<port>; vLLM's exit ends both."""
    process = await asyncio.create_subprocess_exec(*plan.vllm_argv)
    front = FrontSettings(
        upstream=f"http://127.0.0.1:{settings.vllm_port}",
        model=plan.model_name,
        vocab_size=vocab_size(Path(plan.model_path)) if plan.model_path else None,
    )
    runner = web.AppRunner(make_app(front))
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, process.terminate)
        log.info("the /chat front listens on %s:%d", settings.host, settings.port)
        return await process.wait()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        await runner.cleanup()


def run_plan(plan: LaunchPlan, settings: LauncherSettings) -> int:
    """Start what the plan says; returns the exit status for the Pod."""
    if plan.role == "worker":
        return run_worker(plan, settings.ray_wait_s)
    if plan.role == "leader":
        start_ray_head(plan)
        wait_for_nodes(plan.ray_nodes, settings.ray_wait_s)
    if settings.chat_front:
        return asyncio.run(serve_with_front(plan, settings))
    return os.execvp(plan.vllm_argv[0], list(plan.vllm_argv))
