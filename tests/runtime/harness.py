"""The real server on a free local port, for the runtime tests.

``RunningServer`` runs an app from ``create_app`` in a background thread with its own event
loop, listening on 127.0.0.1 with an OS-chosen port, so that tests talk to it with real HTTP
clients (httpx, the ``openai`` client) exactly as a user would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from runtime.server.app import STATE, ServerState, create_app
from runtime.server.loader import LoadedModel, load_model
from runtime.server.settings import Settings

MODEL_NAME = "tiny-llama"


class ThreadServer:
    """An aiohttp app on 127.0.0.1:<free port>, served from a thread with its own event loop:
    ``url``, ``call(fn)`` and ``stop()``."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool = False) -> None:
        self.app = app
        self.handler_cancellation = handler_cancellation
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        self._thread.start()
        if not self._started.wait(60):
            raise RuntimeError("the test server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(
            self.app, handler_cancellation=self.handler_cancellation, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (to inspect app state safely)."""
        return asyncio.run_coroutine_threadsafe(asyncio.to_thread(fn), self.loop).result(60)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


class RunningServer(ThreadServer):
    """The runtime's app (``create_app``) as a ``ThreadServer``, plus ``state`` (the app's
    state) and ``wait_ready()``."""

    def __init__(
        self,
        settings: Settings,
        loader: Callable[[Settings], LoadedModel],
        *,
        handler_cancellation: bool = True,
    ) -> None:
        self.settings = settings
        super().__init__(
            create_app(settings, loader=loader), handler_cancellation=handler_cancellation
        )

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    def wait_ready(self, timeout: float = 120) -> None:
        future = asyncio.run_coroutine_threadsafe(self.state.settled.wait(), self.loop)
        future.result(timeout)
        if self.state.status != "ready":
            raise RuntimeError(f"the server failed to load: {self.state.error}")


def make_settings(model: Path, **overrides: Any) -> Settings:
    base = Settings(
        model=str(model),
        served_model_name=MODEL_NAME,
        host="127.0.0.1",
        port=5000,
        max_num_seqs=16,
        max_queued_requests=64,
        seed=0,
    )
    return replace(base, **overrides)


def start_server(settings: Settings, loaded: LoadedModel | None = None) -> RunningServer:
    """Start a server; with ``loaded``, reuse an already loaded model (limits re-derived)."""
    if loaded is None:
        return RunningServer(settings, load_model)

    def reuse(s: Settings) -> LoadedModel:
        limits = replace(
            loaded.limits,
            max_n=s.max_n,
            context_length=s.max_model_len or loaded.limits.context_length,
        )
        return replace(loaded, limits=limits)

    return RunningServer(settings, reuse)
