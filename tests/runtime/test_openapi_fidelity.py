"""Issue 12 item 6, one behaviour each: the answers match the committed OpenAPI document."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from runtime.server.loader import LoadedModel
from runtime.server.openapi import COMMITTED_SPEC
from runtime.server.settings import Settings
from tests.runtime.harness import RunningServer, make_settings, start_server

SPEC: dict[str, Any] = json.loads(COMMITTED_SPEC.read_text(encoding="utf-8"))
MESSAGES = [{"role": "user", "content": "x"}]


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": SPEC["components"]})


def _request_schema(path: str) -> Draft202012Validator:
    body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return _validator(body["schema"])


@pytest.mark.parametrize("path", ["/health", "/healthz"])
def test_health_answers_match_their_schema(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200
    schema = SPEC["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    assert response.json() == {"status": "Healthy"}
    _validator(schema["schema"]).validate(response.json())


def test_chat_needs_exactly_one_of_prompt_and_messages(http: httpx.Client) -> None:
    schema = _request_schema("/chat")
    for body in ({}, {"prompt": None}, {"prompt": "x", "messages": [{"role": "user"}]}):
        assert not schema.is_valid(body), body
        response = http.post("/chat", json=body)
        assert response.status_code == 400, body
        field = "messages" if "messages" in body else "prompt"
        assert response.json()["detail"].startswith(
            f"{field}: Text generation parameter prompt required (or messages for a chat model)"
        )
    assert not schema.is_valid({"prompt": ""})
    assert http.post("/chat", json={"prompt": ""}).status_code == 400
    assert schema.is_valid({"prompt": "x", "messages": None})


@pytest.mark.parametrize("prompt", ["", [""], [[]], []])
def test_empty_completion_prompts_are_refused_by_the_schema_and_the_server(
    http: httpx.Client, prompt: Any
) -> None:
    assert not _request_schema("/v1/completions").is_valid({"prompt": prompt})
    response = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1})
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("prompt")


def test_405_says_which_methods_the_path_serves(http: httpx.Client) -> None:
    response = http.request("PUT", "/chat", json={"prompt": "x"})
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    response = http.request("DELETE", "/v1/models")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.json()["error"]["message"] == "Method Not Allowed"


def test_a_body_that_is_not_utf8_is_a_400(http: httpx.Client) -> None:
    raw = b'{"messages": "\xff\xfe"}'
    for path in ("/v1/chat/completions", "/chat"):
        response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert "not valid UTF-8" in response.text


def test_a_malformed_http_request_is_one_warning_line(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.split(b"\r\n")[0].split()[1] == b"400"
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1, records
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage().startswith("malformed HTTP request from 127.0.0.1: ")
    assert "\n" not in record.getMessage()


# ---- per-server bounds: n, num_beams and num_return_sequences are at most --max-n ----------


@pytest.fixture(scope="module")
def max_n_3(tiny_model: Path, loaded_tiny: LoadedModel) -> Iterator[RunningServer]:
    running = start_server(make_settings(tiny_model, max_n=3), loaded_tiny)
    running.wait_ready()
    yield running
    running.stop()


N_FIELDS = (
    ("/v1/completions", "CompletionRequest", "n", {"prompt": "x", "max_tokens": 1}),
    ("/v1/chat/completions", "ChatCompletionRequest", "n", {"messages": MESSAGES, "max_tokens": 1}),
    ("/chat", "GenerateKwargs", "num_beams", {"prompt": "x"}),
    ("/chat", "GenerateKwargs", "num_return_sequences", {"prompt": "x"}),
)


def _with(path: str, name: str, value: int, base: dict[str, Any]) -> dict[str, Any]:
    if path == "/chat":
        kwargs = {"max_new_tokens": 1, "do_sample": True, name: value}
        if name == "num_beams":
            kwargs["do_sample"] = False
        return {**base, "generate_kwargs": kwargs}
    return {**base, name: value}


def test_the_committed_document_states_the_default_max_n() -> None:
    default = Settings().max_n
    schemas = SPEC["components"]["schemas"]
    for _, record, name, _ in N_FIELDS:
        prop = schemas[record]["properties"][name]
        assert prop["maximum"] == default, (record, name)
        assert prop["x-server-limit"] == "max_n"
        assert "--max-n" in prop["description"]
    assert f"at most --max-n, {default} here" in SPEC["info"]["description"]


@pytest.mark.parametrize(("path", "record", "name", "base"), N_FIELDS)
def test_the_served_document_states_this_servers_max_n_and_the_server_keeps_it(
    max_n_3: RunningServer, path: str, record: str, name: str, base: dict[str, Any]
) -> None:
    with httpx.Client(base_url=max_n_3.url, timeout=120) as http:
        served = http.get("/openapi.json").json()
        prop = served["components"]["schemas"][record]["properties"][name]
        assert prop["maximum"] == 3
        assert "at most --max-n, 3 here" in served["info"]["description"]
        body = served["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        validator = Draft202012Validator({**body["schema"], "components": served["components"]})
        at_bound, beyond = _with(path, name, 3, base), _with(path, name, 4, base)
        assert validator.is_valid(at_bound)
        assert not validator.is_valid(beyond)
        accepted = http.post(path, json=at_bound)
        assert accepted.status_code == 200, accepted.text
        refused = http.post(path, json=beyond)
        assert refused.status_code == 400
        text = refused.text
        where = f"generate_kwargs.{name}" if path == "/chat" else name
        for part in (where, "must be <= 3", "--max-n"):
            assert part in text, text
