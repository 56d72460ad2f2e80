"""The aiohttp application: routes, error formats, and the model's lifecycle.

``create_app(settings)`` builds the app and does nothing else. When the app starts, the model
loads on a background thread (``/health`` answers 503 meanwhile), then the engine starts and the
endpoints serve. Handlers parse the body, call a service (``chat_service``, ``openai_service``)
and map the result; errors become ``{"detail": ...}`` on ``/chat`` and the probes, OpenAI's
``{"error": {...}}`` on ``/v1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from runtime.server.chat_service import ChatService
from runtime.server.engine import Engine
from runtime.server.errors import EngineError, NotReadyError, RequestError
from runtime.server.loader import LoadedModel, load_model
from runtime.server.metrics import CONTENT_TYPE, Metrics
from runtime.server.openai_service import OpenAIService
from runtime.server.openapi import ROUTES, build_openapi, server_limits
from runtime.server.protocol import ChatCompletionRequest, ChatRequest, CompletionRequest
from runtime.server.schema import Parser
from runtime.server.settings import Settings
from runtime.server.tokenizing import Tokenizing

log = logging.getLogger(__name__)

Loader = Callable[[Settings], LoadedModel]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServerState:
    """Per-app state (``app[STATE]``)."""

    settings: Settings
    metrics: Metrics
    loader: Loader
    status: str = "loading"  # loading | ready | failed
    error: str | None = None
    loaded: LoadedModel | None = None
    engine: Engine | None = None
    chat: ChatService | None = None
    openai: OpenAIService | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    parsers: dict[str, Parser] = field(default_factory=dict)


STATE = web.AppKey("state", ServerState)


class OneLineBadRequests(logging.Filter):
    """aiohttp logs a malformed HTTP request (a bad request line, header or chunk) at ERROR
    with a traceback; it is the client's fault, so it becomes one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed HTTP request from %s: %s"
            record.args = (peer, " ".join(str(exc.message or type(exc).__name__).split()))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_requests() -> None:
    """Install ``OneLineBadRequests`` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in logger.filters):
        logger.addFilter(OneLineBadRequests())


def create_app(settings: Settings, *, loader: Loader = load_model) -> web.Application:
    """Build the server for ``settings`` (``loader`` loads the model; tests may gate it)."""
    quiet_bad_requests()
    limits = server_limits(settings)
    app = web.Application(
        client_max_size=settings.max_request_bytes, middlewares=[_errors_and_metrics]
    )
    app[STATE] = ServerState(
        settings=settings,
        metrics=Metrics(settings.model_name),
        loader=loader,
        parsers={
            "chat": Parser(ChatRequest, limits),
            "completions": Parser(CompletionRequest, limits),
            "chat_completions": Parser(ChatCompletionRequest, limits),
        },
    )
    handlers: dict[str, Handler] = {
        "health": _health,
        "healthz": _health,
        "metrics": _metrics,
        "openapi": _openapi,
        "chat": _chat,
        "models": _models,
        "completions": _completions,
        "chat_completions": _chat_completions,
    }
    for route in ROUTES:
        app.router.add_route(route.method, route.path, handlers[route.name], name=route.name)
    app.cleanup_ctx.append(_lifecycle)
    return app


# ---- lifecycle -------------------------------------------------------------------------------


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    task = asyncio.create_task(_load(state))
    yield
    task.cancel()
    if state.engine is not None:
        await asyncio.get_running_loop().run_in_executor(None, state.engine.shutdown)


async def _load(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[LoadedModel] = loop.create_future()

    def work() -> None:  # a daemon thread: a stuck load never blocks the process' exit
        try:
            result = state.loader(state.settings)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=work, name="model-loader", daemon=True).start()
    try:
        loaded = await done
        engine = Engine(
            loaded.model,
            vocab_size=loaded.limits.vocab_size,
            pad_token_id=loaded.limits.pad_token_id,
            device=loaded.device,
            max_num_seqs=state.settings.max_num_seqs,
            max_queued_requests=state.settings.max_queued_requests,
            max_prefill_tokens=state.settings.max_prefill_tokens,
            retry_after=state.settings.retry_after,
            observer=state.metrics,
            seed=state.settings.seed,
        )
        engine.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("the model failed to load: %s", exc)
        state.status, state.error = "failed", str(exc)
        state.settled.set()
        return
    tokenizing = Tokenizing(loaded.tokenizer)
    state.loaded, state.engine = loaded, engine
    state.chat = ChatService(engine, tokenizing, loaded.limits, state.metrics)
    state.openai = OpenAIService(
        engine,
        tokenizing,
        loaded.limits,
        state.metrics,
        model_name=state.settings.model_name,
        root=loaded.root,
    )
    state.status = "ready"
    state.settled.set()
    log.info("ready: serving %s", state.settings.model_name)


def _settle(
    future: asyncio.Future[LoadedModel], result: LoadedModel | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


# ---- errors and metrics ----------------------------------------------------------------------


def _is_openai(request: web.Request) -> bool:
    return request.path.startswith("/v1/")


def _error_response(request: web.Request, exc: RequestError) -> web.Response:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if _is_openai(request):
        body: dict[str, Any] = {
            "error": {
                "message": str(exc),
                "type": exc.error_type,
                "param": exc.field,
                "code": exc.code,
            }
        }
    else:
        body = {"detail": str(exc)}
    return web.json_response(body, status=exc.status, headers=headers)


class _HttpError(RequestError):
    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except RequestError as exc:
        response = _error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_response(
            request, _HttpError(exc.status, exc.reason, "invalid_request_error")
        )
        if "Allow" in exc.headers:  # 405: RFC 9110 wants the methods the path serves
            response.headers["Allow"] = exc.headers["Allow"]
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except EngineError as exc:
        response = _error_response(request, _HttpError(500, str(exc), "internal_server_error"))
    except Exception as exc:
        log.exception("internal error on %s %s", request.method, request.path)
        response = _error_response(
            request,
            _HttpError(500, f"internal error: {type(exc).__name__}", "internal_server_error"),
        )
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[STATE].metrics.http_answer(request.method, route, response.status)
    return response


# ---- helpers ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        text = raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise RequestError(
            f"the body is not valid {request.charset or 'UTF-8'} text; send JSON in UTF-8"
        ) from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be encoded
    except RecursionError:
        raise RequestError("the body is nested too deeply") from None
    except UnicodeEncodeError:
        raise RequestError("the body holds invalid Unicode (a lone surrogate)") from None
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    return body


def _ready(request: web.Request) -> ServerState:
    state = request.app[STATE]
    if state.status != "ready":
        if state.status == "failed":
            raise NotReadyError(f"the model failed to load: {state.error}")
        raise NotReadyError("the model is still loading; retry when /health answers 200")
    return state


def _disconnected(request: web.Request) -> Callable[[], bool]:
    def check() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return check


def _closed() -> web.Response:
    return web.Response(status=499, text="client closed the request")


async def _sse(
    request: web.Request, chunks: AsyncGenerator[dict[str, Any], None]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        async with aclosing(chunks) as stream:
            async for chunk in stream:
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    except EngineError as exc:
        error = {
            "error": {
                "message": str(exc),
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        }
        await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


# ---- handlers --------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.status == "ready":
        return web.json_response({"status": "Healthy"})
    if state.status == "failed":
        return web.json_response(
            {"status": "Failed", "detail": f"the model failed to load: {state.error}"}, status=503
        )
    return web.json_response({"status": "Loading", "detail": "the model is loading"}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _openapi(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(build_openapi(server_limits(state.settings)))


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    parsed = state.parsers["chat"].parse(await _body(request))
    service = _ready(request).chat
    assert service is not None
    result = await service.chat(parsed, _disconnected(request))
    return _closed() if result is None else web.json_response(result)


async def _models(request: web.Request) -> web.Response:
    service = _ready(request).openai
    assert service is not None
    return web.json_response(service.models())


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    parsed = state.parsers["completions"].parse(await _body(request))
    service = _ready(request).openai
    assert service is not None
    result = await service.completion(parsed, _disconnected(request))
    if result is None:
        return _closed()
    if isinstance(result, dict):
        return web.json_response(result)
    return await _sse(request, result)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    parsed = state.parsers["chat_completions"].parse(await _body(request))
    service = _ready(request).openai
    assert service is not None
    result = await service.chat_completion(parsed, _disconnected(request))
    if result is None:
        return _closed()
    if isinstance(result, dict):
        return web.json_response(result)
    return await _sse(request, result)
