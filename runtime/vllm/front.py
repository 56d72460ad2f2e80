"""A thin aiohttp front on the runtime port: the seed's ``/chat``, everything else proxied to vLLM.

vLLM listens on 127.0.0.1 (an internal port); this front listens on the runtime port the Service
targets. ``POST /chat`` is checked and translated (``runtime.vllm.chat``); every other path
(``/v1/*`` with streaming, ``/health``, ``/metrics``, ``/tokenize``, ``/docs``...) is passed
through unchanged, bodies and status codes included, so OpenAI clients and vLLM dashboards see
vLLM itself. When vLLM is not up yet, ``/health`` answers 503 (the readiness probe waits).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from runtime.server.errors import RequestError
from runtime.server.protocol import ChatRequest
from runtime.server.schema import Parser
from runtime.vllm.chat import (
    chat_response,
    check_request,
    completion_call,
    plan,
    tokenize_bodies,
)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class FrontSettings:
    """Where vLLM is and which model name ``/chat`` uses."""

    upstream: str
    """vLLM's base URL, for example ``http://127.0.0.1:5001``."""
    model: str
    """The model name ``/chat`` requests (the Workspace's: base + all adapters)."""
    vocab_size: int | None = None
    """The model's vocabulary size, to check token ids in ``/chat`` (None: vLLM checks)."""
    max_n: int = 8
    """The largest ``num_return_sequences`` (as the transformers runtime's ``--max-n``)."""
    read_timeout_s: float = 600.0
    """The longest vLLM may stay silent on a connection (a stream may last longer)."""
    max_request_bytes: int = 64 * 2**20
    """The largest request body accepted (aiohttp's default of 1 MiB is too small for prompts)."""


SETTINGS = web.AppKey("settings", FrontSettings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
PARSER = web.AppKey("chat_parser", Parser)


def _detail(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


def _upstream_message(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(data.get("message") or data.get("detail") or json.dumps(data))


class UpstreamError(RequestError):
    """vLLM refused or failed a call the front made for ``/chat``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"vLLM answered {status}: {message}")
        self.status = status if status < 500 else 502


async def _call(app: web.Application, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with app[SESSION].post(app[SETTINGS].upstream + path, json=body) as response:
        data = await response.json(content_type=None)
        if not isinstance(data, dict):
            data = {"data": data}
        if response.status != 200:
            raise UpstreamError(response.status, _upstream_message(data))
        return data


async def chat(request: web.Request) -> web.Response:
    """``POST /chat``: parse and plan as the transformers runtime, generate on vLLM."""
    app, settings = request.app, request.app[SETTINGS]
    try:
        try:
            body = await request.json()
        except ValueError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from None
        parsed: ChatRequest = app[PARSER].parse(body)
        check_request(parsed)
        counted = [
            await _call(app, "/tokenize", b) for b in tokenize_bodies(parsed, settings.model)
        ]
        planned = plan(
            parsed,
            counted[0]["tokens"],
            prefix_tokens=len(counted[1]["tokens"]) if len(counted) > 1 else 0,
            max_model_len=int(counted[0]["max_model_len"]),
            vocab_size=settings.vocab_size,
            max_n=settings.max_n,
        )
        call = completion_call(parsed, planned, settings.model)
        completion = await _call(app, call.path, call.body)
    except RequestError as exc:
        return _detail(exc.status, str(exc))
    except aiohttp.ClientError as exc:
        return _detail(503, f"vLLM is not reachable: {exc}")
    return web.json_response(chat_response(parsed, completion))


async def proxy(request: web.Request) -> web.StreamResponse:
    """Pass any other request to vLLM and stream its answer back."""
    settings, session = request.app[SETTINGS], request.app[SESSION]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = await request.read()
    # vLLM answers /health; /healthz is the same probe under the transformers runtime's name.
    target = "/health" if request.path == "/healthz" else request.rel_url.path_qs
    try:
        async with session.request(
            request.method,
            settings.upstream + target,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectionError as exc:
        status = 503 if request.path in ("/health", "/healthz") else 502
        return _detail(status, f"vLLM is not reachable yet: {exc}")


def make_app(settings: FrontSettings) -> web.Application:
    """The front's application (``aiohttp.web.run_app(make_app(...), port=5000)``)."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[SETTINGS] = settings
    app[PARSER] = Parser(ChatRequest)

    async def client(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=settings.read_timeout_s
        )
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(client)
    app.router.add_post("/chat", chat)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app
