"""The /chat front over real HTTP: the seed's bodies, the same answers as the transformers
runtime's /chat (greedy), its 400s, and everything else proxied (streaming included)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from runtime.server.loader import LoadedModel, load_model
from runtime.server.settings import Settings
from runtime.vllm.front import FrontSettings, make_app
from tests.runtime.vllm.servers import ThreadServer, vllm_standin
from tests.support.tiny_model import build_tiny_llama

MODEL = "tiny-llama"

SEED_BASIC = {"prompt": "YOUR_PROMPT_HERE"}
SEED_FULL: dict[str, Any] = {
    "prompt": "YOUR_PROMPT_HERE",
    "return_full_text": False,
    "clean_up_tokenization_spaces": False,
    "prefix": None,
    "handle_long_generation": None,
    "generate_kwargs": {
        "max_length": 200,
        "min_length": 0,
        "do_sample": True,
        "early_stopping": False,
        "num_beams": 1,
        "num_beam_groups": 1,
        "diversity_penalty": 0.0,
        "temperature": 1.0,
        "top_k": 10,
        "top_p": 1,
        "typical_p": 1,
        "repetition_penalty": 1,
        "length_penalty": 1,
        "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0,
        "bad_words_ids": None,
        "num_return_sequences": 1,
        "output_scores": False,
        "return_dict_in_generate": False,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "remove_invalid_values": None,
    },
}


def _settings(model_dir: Path) -> Settings:
    return Settings(
        model=str(model_dir),
        served_model_name=MODEL,
        host="127.0.0.1",
        port=5000,
        max_num_seqs=16,
        max_queued_requests=64,
        seed=0,
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    model_dir = build_tiny_llama()
    settings = _settings(model_dir)
    loaded: LoadedModel = load_model(settings)
    server = ThreadServer(vllm_standin(settings, loaded, model_dir))
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(upstream: ThreadServer) -> Iterator[ThreadServer]:
    server = ThreadServer(
        make_app(FrontSettings(upstream=upstream.url, model=MODEL, vocab_size=512))
    )
    yield server
    server.stop()


@pytest.fixture
def via_front(front: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.url, timeout=120) as client:
        yield client


@pytest.fixture
def direct(upstream: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=120) as client:
        yield client


def test_seed_curl_bodies_verbatim(via_front: httpx.Client) -> None:
    basic = via_front.post("/chat", json=SEED_BASIC)
    assert basic.status_code == 200, basic.text
    assert basic.json()["Result"].startswith("YOUR_PROMPT_HERE")
    full = via_front.post("/chat", json=SEED_FULL)
    assert full.status_code == 200, full.text
    assert set(full.json()) == {"Result"}
    assert isinstance(full.json()["Result"], str)


def _greedy(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body.setdefault("generate_kwargs", {}).update(do_sample=False, **kwargs)
    return body


@pytest.mark.parametrize(
    "body",
    [
        _greedy(SEED_FULL, max_length=40),
        _greedy(SEED_BASIC, max_length=30, min_length=25),
        _greedy({"prompt": "The Workspace", "prefix": "Kaito: "}, max_length=20),
        _greedy({"prompt": "adapter " * 58, "handle_long_generation": "hole"}, max_length=520),
        _greedy({"messages": [{"role": "user", "content": "What is a Workspace?"}]}, max_length=60),
        _greedy({"prompt": "The preset", "clean_up_tokenization_spaces": True}, max_length=30),
        _greedy({"prompt": "The preset"}, max_length=30, eos_token_id=[5, 6]),
        _greedy({"prompt": "The preset"}, max_new_tokens=12, repetition_penalty=1.3),
    ],
    ids=["seed-full", "min-length", "prefix", "hole", "messages", "clean-up", "eos", "new"],
)
def test_greedy_answers_equal_the_transformers_runtime(
    body: dict[str, Any], via_front: httpx.Client, direct: httpx.Client
) -> None:
    """The same body gives the same Result through the vLLM front as from the transformers
    runtime's own /chat: same validation, same plan, same tokens. (Incremental detokenization
    drops a trailing incomplete character that a one-shot decode shows as U+FFFD.)"""
    want = direct.post("/chat", json=body)
    got = via_front.post("/chat", json=body)
    assert want.status_code == 200, want.text
    assert got.status_code == 200, got.text
    assert got.json()["Result"] == want.json()["Result"].rstrip("\ufffd")
    assert len(got.json()["Result"]) > len(body.get("prompt", ""))


def test_several_sequences(via_front: httpx.Client) -> None:
    body = {"prompt": "The", "generate_kwargs": {"max_length": 10, "num_return_sequences": 3}}
    got = via_front.post("/chat", json=body).json()
    assert len(got["sequences"]) == 3
    assert got["Result"] == "".join(got["sequences"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "a", "colour": 1}, "colour"),
        ({"prompt": "a", "generate_kwargs": {"top_p": 7}}, "generate_kwargs.top_p"),
        ({"prompt": "a", "generate_kwargs": {"max_length": -1}}, "generate_kwargs.max_length"),
        ({"prompt": "a", "generate_kwargs": {"num_beams": 2}}, "generate_kwargs.num_beams"),
        ({"prompt": "a", "generate_kwargs": {"typical_p": 0.5}}, "generate_kwargs.typical_p"),
        (
            {"prompt": "a", "generate_kwargs": {"no_repeat_ngram_size": 2}},
            "generate_kwargs.no_repeat_ngram_size",
        ),
        (
            {"prompt": "a", "generate_kwargs": {"bad_words_ids": [[1, 2]]}},
            "generate_kwargs.bad_words_ids",
        ),
        ({"prompt": "a", "generate_kwargs": {"max_length": 1}}, "generate_kwargs.max_length"),
        (
            {"prompt": "a", "generate_kwargs": {"eos_token_id": 9999}},
            "generate_kwargs.eos_token_id",
        ),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    body: dict[str, Any], field: str, via_front: httpx.Client
) -> None:
    answer = via_front.post("/chat", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"]


def test_not_json(via_front: httpx.Client) -> None:
    answer = via_front.post("/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]


def test_everything_else_is_vllms_own(front: ThreadServer, via_front: httpx.Client) -> None:
    assert via_front.get("/health").status_code == 200
    assert via_front.get("/healthz").status_code == 200
    models = via_front.get("/v1/models")
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == [MODEL]
    metrics = via_front.get("/metrics")
    assert metrics.status_code == 200
    assert "text/plain" in metrics.headers["content-type"]
    missing = via_front.post("/v1/completions", json={"model": "nope", "prompt": "a"})
    assert missing.status_code == 404
    assert "error" in missing.json()
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="The Workspace", max_tokens=8, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = client.completions.create(
        model=MODEL, prompt="The Workspace", max_tokens=8, temperature=0
    )
    assert streamed == whole.choices[0].text
    assert len(chunks) > 1


def test_upstream_down() -> None:
    server = ThreadServer(make_app(FrontSettings(upstream="http://127.0.0.1:9", model=MODEL)))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health").status_code == 503
            assert client.get("/v1/models").status_code == 502
            answer = client.post("/chat", json=SEED_BASIC)
            assert answer.status_code == 503
            assert "not reachable" in answer.json()["detail"]
    finally:
        server.stop()
