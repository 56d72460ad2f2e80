"""The server's routes and its OpenAPI 3.1 document, both from one table.

``ROUTES`` lists every endpoint with its request and response types (``protocol.py``). The app
registers its handlers from this table, and ``build_openapi`` renders it with the per-server
bounds of the server's settings (``server_limits``: ``n``, ``num_beams`` and
``num_return_sequences`` are at most ``--max-n``), so that the served document states what this
server accepts. The committed ``runtime/openapi.json`` is the document of a server with the
default settings (``python -m runtime.server --print-openapi``; a test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.server.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatRequest,
    ChatResponse,
    Completion,
    CompletionRequest,
    DetailError,
    ErrorResponse,
    HealthResponse,
    ModelList,
)
from runtime.server.schema import REF_PREFIX, bind_limits, components
from runtime.server.settings import Settings

API_VERSION = "1.0.0"
COMMITTED_SPEC = Path(__file__).resolve().parent.parent / "openapi.json"
SERVER_LIMITS = ("max_n",)
"""The settings that bound request fields (``Field.limit`` names them)."""


def server_limits(settings: Settings) -> dict[str, int]:
    """The per-server bounds of requests, read from the server's settings."""
    return {name: int(getattr(settings, name)) for name in SERVER_LIMITS}


@dataclass(frozen=True)
class Answer:
    """One documented response of a route."""

    description: str
    body: Any = None  # a wire type, or a JSON Schema dict, or None
    media: str = "application/json"
    stream: Any = None  # the chunk type of a text/event-stream alternative


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    summary: str
    request: Any = None
    answers: dict[int, Answer] = field(default_factory=dict)


def _kaito_errors() -> dict[int, Answer]:
    return {
        400: Answer("invalid request: the message names the field and the fix", DetailError),
        429: Answer("the queue is full; retry after the Retry-After header's seconds", DetailError),
        500: Answer("generation failed", DetailError),
        503: Answer("the model is still loading (or failed to load)", DetailError),
    }


def _openai_errors() -> dict[int, Answer]:
    return {
        400: Answer("invalid request (OpenAI error format, param names the field)", ErrorResponse),
        404: Answer("unknown model", ErrorResponse),
        429: Answer(
            "the queue is full; retry after the Retry-After header's seconds", ErrorResponse
        ),
        500: Answer("generation failed", ErrorResponse),
        503: Answer("the model is still loading (or failed to load)", ErrorResponse),
    }


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/health",
        "health",
        "Readiness: 200 once the model and its adapters are loaded, 503 before",
        answers={200: Answer("ready", HealthResponse), 503: Answer("not ready", HealthResponse)},
    ),
    Route(
        "GET",
        "/healthz",
        "healthz",
        "Same as /health",
        answers={200: Answer("ready", HealthResponse), 503: Answer("not ready", HealthResponse)},
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (vLLM's metric names)",
        answers={
            200: Answer("metrics in the Prometheus text format", {"type": "string"}, "text/plain")
        },
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        "This document",
        answers={200: Answer("the OpenAPI document", {"type": "object"})},
    ),
    Route(
        "POST",
        "/chat",
        "chat",
        "Generate text from a prompt or messages (KAITO's transformers API)",
        request=ChatRequest,
        answers={200: Answer("the generated text", ChatResponse), **_kaito_errors()},
    ),
    Route(
        "GET",
        "/v1/models",
        "models",
        "The served model (OpenAI API)",
        answers={200: Answer("the model list", ModelList)},
    ),
    Route(
        "POST",
        "/v1/completions",
        "completions",
        "Complete a prompt (OpenAI API)",
        request=CompletionRequest,
        answers={
            200: Answer(
                "the completion (or, with stream, server-sent events)",
                Completion,
                stream=Completion,
            ),
            **_openai_errors(),
        },
    ),
    Route(
        "POST",
        "/v1/chat/completions",
        "chat_completions",
        "Answer a conversation (OpenAI API)",
        request=ChatCompletionRequest,
        answers={
            200: Answer(
                "the chat completion (or, with stream, server-sent events)",
                ChatCompletion,
                stream=ChatCompletionChunk,
            ),
            **_openai_errors(),
        },
    ),
)


def _schema_of(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    return {"$ref": REF_PREFIX + body.__name__}


def build_openapi(limits: Mapping[str, int]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server with the bounds ``limits`` (``server_limits``);
    deterministic: sorted, no timestamps."""
    types: list[Any] = []
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
        if route.request is not None:
            types.append(route.request)
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema_of(route.request)}},
            }
        responses: dict[str, Any] = {}
        for status, answer in sorted(route.answers.items()):
            entry: dict[str, Any] = {"description": answer.description}
            content: dict[str, Any] = {}
            if answer.body is not None:
                if not isinstance(answer.body, dict):
                    types.append(answer.body)
                content[answer.media] = {"schema": _schema_of(answer.body)}
            if answer.stream is not None:
                types.append(answer.stream)
                content["text/event-stream"] = {
                    "schema": {
                        # OpenAPI 3.1: the schema of a text/event-stream is that of one event
                        "type": "object",
                        "description": "one server-sent event",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "string",
                                "description": (
                                    "a JSON chunk (x-chunk-schema); the last event is [DONE]"
                                ),
                            }
                        },
                    },
                    "x-chunk-schema": _schema_of(answer.stream),
                }
            if content:
                entry["content"] = content
            if status == 429:
                entry["headers"] = {
                    "Retry-After": {
                        "description": "seconds to wait before retrying",
                        "schema": {"type": "integer"},
                    }
                }
            responses[str(status)] = entry
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "KAITO transformers inference API",
            "version": API_VERSION,
            "description": "POST /chat (KAITO) and the OpenAI-compatible API served by "
            "runtime.server. Fields marked x-extension are not part of the API they follow. "
            "Bounds marked x-server-limit are this server's settings (n, num_beams and "
            f"num_return_sequences: at most --max-n, {limits['max_n']} here). Rules a JSON "
            "Schema cannot state are checked by the server and refused with a 400 whose "
            "message names the field: token ids must be below the model's vocabulary size, "
            "the prompt and the generation must fit the model's context window, and relations "
            "between fields (min_length <= max_length; max_length above the prompt's length "
            "unless max_new_tokens is set; no temperature 0 with do_sample; "
            "num_return_sequences needs do_sample or as many beams).",
        },
        "paths": paths,
        "components": {"schemas": bind_limits(components(types), limits)},
    }
