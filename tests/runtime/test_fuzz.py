"""Fuzzing request bodies over HTTP: never a 5xx, the right error format, the server stays up."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.server.loader import LoadedModel
from runtime.server.protocol import (
    ChatCompletionRequest,
    ChatRequest,
    CompletionRequest,
)
from tests.runtime.harness import MODEL_NAME, RunningServer, make_settings, start_server

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=8,
)


def typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a wire type, small and near the usual bounds (many valid, some not)."""
    tp = get_args(tp)[0] if get_origin(tp) is Annotated else tp
    origin = get_origin(tp)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.one_of(st.integers(-1, 8), st.integers(0, 520))
    if tp is float:
        return st.one_of(st.floats(0, 1.5), st.floats(-0.1, 2.5), st.sampled_from([0.0, 1.0]))
    if tp is str:
        return st.one_of(st.text(max_size=12), st.sampled_from(["Kaito", MODEL_NAME]))
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (Union, UnionType):
        return st.one_of(*(typed(a) for a in get_args(tp)))
    if origin is list:
        return st.lists(typed(get_args(tp)[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=3), typed(get_args(tp)[1]), max_size=1)
    if dataclasses.is_dataclass(tp):
        return record(tp, main="content" if tp.__name__ == "ChatMessage" else None)
    return values


def record(cls: Any, main: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """A dict for a request dataclass: required fields (and ``main``) mostly present, a few
    optional ones, each now and then with a junk value."""
    hints = get_type_hints(cls, include_extras=True)
    required = {
        f.name: typed(hints[f.name])
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING or f.name == main
    }
    optional = {
        f.name: st.one_of(*[typed(hints[f.name])] * 6, values)
        for f in dataclasses.fields(cls)
        if f.name not in required
    }
    keys = sorted(optional)
    chosen = st.lists(st.sampled_from(keys), max_size=3, unique=True) if keys else st.just([])

    def pick(base: dict[str, Any], names: list[str], draw: st.DrawFn) -> dict[str, Any]:
        return {**base, **{n: draw(optional[n]) for n in names}}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        base = draw(st.fixed_dictionaries(required))
        if required and draw(st.integers(0, 9)) == 0:
            base.pop(draw(st.sampled_from(sorted(base))))
        return pick(base, draw(chosen), draw)

    return build()


def bodies(cls: Any, main: str | None = None) -> st.SearchStrategy[Any]:
    """Mostly well-formed bodies with odd values, some with a junk key, some pure junk."""
    body = record(cls, main)
    junk = st.builds(lambda d, k, v: {**d, k: v}, body, st.text(max_size=6), values)
    return st.one_of(body, body, body, body, junk, values)


CHAT_BODIES = bodies(ChatRequest, main="prompt")
COMPLETION_BODIES = bodies(CompletionRequest)
CHAT_COMPLETION_BODIES = bodies(ChatCompletionRequest)


@pytest.fixture(scope="module")
def fuzz_server(tiny_model: Path, loaded_tiny: LoadedModel) -> Iterator[RunningServer]:
    # A short context keeps every accepted request fast.
    running = start_server(make_settings(tiny_model, max_model_len=40, max_n=4), loaded_tiny)
    running.wait_ready()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fuzz_http(fuzz_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server.url, timeout=120) as client:
        yield client


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(response: httpx.Response, openai_format: bool) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code == 200:
        return
    body = response.json()
    if openai_format:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["message"]
    else:
        assert isinstance(body["detail"], str)
        assert body["detail"]


@FUZZ
@given(body=CHAT_BODIES)
def test_fuzz_chat(fuzz_http: httpx.Client, body: Any) -> None:
    check(fuzz_http.post("/chat", content=json.dumps(body)), openai_format=False)


@FUZZ
@given(body=COMPLETION_BODIES)
def test_fuzz_completions(fuzz_http: httpx.Client, body: Any) -> None:
    check(fuzz_http.post("/v1/completions", content=json.dumps(body)), openai_format=True)


@FUZZ
@given(body=CHAT_COMPLETION_BODIES)
def test_fuzz_chat_completions(fuzz_http: httpx.Client, body: Any) -> None:
    check(fuzz_http.post("/v1/chat/completions", content=json.dumps(body)), openai_format=True)


def test_server_alive_after_fuzzing(fuzz_http: httpx.Client) -> None:
    assert fuzz_http.get("/health").status_code == 200
    response = fuzz_http.post(
        "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 2}}
    )
    assert response.status_code == 200
