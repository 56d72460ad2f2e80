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

from runtime.vllm.chat import (
    ChatRequestError,
    chat_result,
    generation_call,
    parse_chat_request,
    tokenize_body,
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
    timeout_s: float = 600.0
    """The longest a proxied request may take."""


SETTINGS = web.AppKey("settings", FrontSettings)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _detail(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


async def _post_json(
    app: web.Application, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    settings, session = app[SETTINGS], app[SESSION]
    async with session.post(settings.upstream + path, json=body) as response:
        data = await response.json(content_type=None)
        return response.status, data if isinstance(data, dict) else {"data": data}


def _upstream_message(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(data.get("message") or data.get("detail") or json.dumps(data))


async def chat(request: web.Request) -> web.Response:
    """``POST /chat``: parse, count the prompt, generate, answer ``{"Result": ...}``."""
    try:
        body = await request.json()
    except ValueError:
        return _detail(400, "body: not valid JSON")
    model = request.app[SETTINGS].model
    try:
        parsed = parse_chat_request(body)
        status, counted = await _post_json(request.app, "/tokenize", tokenize_body(parsed, model))
        if status != 200:
            return _detail(status if status < 500 else 502, _upstream_message(counted))
        call = generation_call(parsed, model, int(counted["count"]), int(counted["max_model_len"]))
        status, generated = await _post_json(request.app, call.path, call.body)
    except ChatRequestError as exc:
        return _detail(400, str(exc))
    except aiohttp.ClientError as exc:
        return _detail(503, f"vLLM is not reachable: {exc}")
    if status != 200:
        return _detail(status if status < 500 else 502, _upstream_message(generated))
    return web.json_response(chat_result(parsed, generated))


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
    app = web.Application()
    app[SETTINGS] = settings

    async def client(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(client)
    app.router.add_post("/chat", chat)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app
