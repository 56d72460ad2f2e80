"""Servers for the /chat front's tests, each on a free port in a thread with its own loop.

vLLM cannot run on this machine's CPU build, so the front's upstream is a stand-in that speaks
vLLM's API with real parts: the transformers runtime's server (its real ``/v1/completions``,
``/v1/models``, ``/health`` and ``/metrics`` on the tiny Llama) plus vLLM's ``/tokenize``
implemented with the same Hugging Face tokenizer calls vLLM makes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from runtime.server.app import create_app
from runtime.server.loader import LoadedModel
from runtime.server.settings import Settings


class ThreadServer:
    """``app`` served on 127.0.0.1:<free port> from a thread: ``url`` and ``stop()``."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the test server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        self._ready.set()
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


def vllm_standin(settings: Settings, loaded: LoadedModel, model_dir: Path) -> web.Application:
    """The transformers runtime's app plus vLLM's ``POST /tokenize``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def reuse(s: Settings) -> LoadedModel:
        return replace(loaded, limits=replace(loaded.limits, max_n=s.max_n))

    app = create_app(settings, loader=reuse)

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            ids = tokenizer.apply_chat_template(
                body["messages"],
                add_generation_prompt=body.get("add_generation_prompt", True),
                continue_final_message=body.get("continue_final_message", False),
                tokenize=True,
                return_dict=False,
            )
        else:
            ids = tokenizer(
                body["prompt"], add_special_tokens=body.get("add_special_tokens", True)
            ).input_ids
        tokens = [int(t) for t in ids]
        return web.json_response(
            {"count": len(tokens), "max_model_len": loaded.limits.context_length, "tokens": tokens}
        )

    app.router.add_post("/tokenize", tokenize)
    return app
