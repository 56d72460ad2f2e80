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
from collections.abc import Callable
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
        raise _ray_missing(plan.ray_argv) from None
    if code != 0:
        raise LauncherError(f"{' '.join(plan.ray_argv)} failed with exit status {code}")


def _ray_missing(argv: tuple[str, ...]) -> LauncherError:
    return LauncherError(
        f"{argv[0]!r} is not installed in this image; multi-node inference needs Ray "
        "(pip install 'vllm[ray]' or ray)"
    )


def worker_health_app(running: Callable[[], bool]) -> web.Application:
    """``/health`` (and ``/healthz``) of a worker Pod: 200 while its Ray node process runs.

    Every Pod of a multi-node StatefulSet gets the same probes; a worker serves no inference,
    so its health is that of the Ray node that lends its GPUs to the leader's vLLM.
    """

    async def health(_: web.Request) -> web.Response:
        if running():
            return web.json_response({"status": "ok", "role": "worker"})
        return web.json_response(
            {"status": "waiting for the Ray head", "role": "worker"}, status=503
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)
    return app


async def _run_worker(
    plan: LaunchPlan, timeout_s: float, retry_s: float, listen: tuple[str, int] | None
) -> int:
    process: asyncio.subprocess.Process | None = None
    stopping = False
    runner: web.AppRunner | None = None
    if listen is not None:
        runner = web.AppRunner(
            worker_health_app(lambda: process is not None and process.returncode is None)
        )
        await runner.setup()
        await web.TCPSite(runner, *listen).start()

    def stop() -> None:
        nonlocal stopping
        stopping = True
        if process is not None and process.returncode is None:
            process.terminate()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                process = await asyncio.create_subprocess_exec(*plan.ray_argv)
            except FileNotFoundError:
                raise _ray_missing(plan.ray_argv) from None
            code = await process.wait()
            if stopping or code == 0 or time.monotonic() > deadline:
                return code
            log.info("the Ray head is not reachable yet (exit %d); retrying", code)
            await asyncio.sleep(retry_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
        if runner is not None:
            await runner.cleanup()


def run_worker(
    plan: LaunchPlan,
    timeout_s: float,
    retry_s: float = RETRY_S,
    *,
    listen: tuple[str, int] | None = None,
) -> int:
    """Join the leader's Ray head and block; retry while the leader is not up yet.

    With ``listen`` (host, port) the worker answers ``/health`` there meanwhile (the Pod's
    probes), 200 while the Ray node process runs. SIGTERM stops the Ray process.
    """
    return asyncio.run(_run_worker(plan, timeout_s, retry_s, listen))


def vllm_command(plan: LaunchPlan) -> tuple[list[str], dict[str, str]]:
    """vLLM's argv and environment: ``python`` is this interpreter (CPU mode starts vLLM's
    module), and the plan's variables (``VLLM_CPU_KVCACHE_SPACE``) join the environment."""
    argv = list(plan.vllm_argv)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    return argv, {**os.environ, **dict(plan.vllm_env)}


async def serve_with_front(plan: LaunchPlan, settings: LauncherSettings) -> int:
    """vLLM on 127.0.0.1:<vllm port> and the /chat front on <host>:<port>; vLLM's exit ends both."""
    argv, env = vllm_command(plan)
    process = await asyncio.create_subprocess_exec(*argv, env=env)
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
        return run_worker(plan, settings.ray_wait_s, listen=(settings.host, settings.port))
    if plan.role == "leader":
        start_ray_head(plan)
        wait_for_nodes(plan.ray_nodes, settings.ray_wait_s)
    if settings.chat_front:
        return asyncio.run(serve_with_front(plan, settings))
    argv, env = vllm_command(plan)
    return os.execvpe(argv[0], argv, env)
