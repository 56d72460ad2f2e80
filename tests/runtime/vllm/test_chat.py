"""The /chat → vLLM translation, as pure functions (the HTTP path is in test_front.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

PARSER = Parser(ChatRequest)


def _call(body: dict[str, Any], tokens: int = 5, context: int = 512) -> dict[str, Any]:
    req = PARSER.parse(body)
    check_request(req)
    planned = plan(
        req,
        list(range(1, tokens + 1)),
        prefix_tokens=0,
        max_model_len=context,
        vocab_size=512,
        max_n=8,
    )
    return completion_call(req, planned, "m").body


def test_seed_defaults_become_vllm_sampling() -> None:
    body = _call({"prompt": "hi"})
    assert body == {
        "model": "m",
        "prompt": [1, 2, 3, 4, 5],
        "max_tokens": 195,  # max_length 200 counts the 5 prompt tokens
        "min_tokens": 0,
        "n": 1,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_k": 10,
        "top_p": 1.0,
    }


def test_greedy_eos_bad_words_and_seed() -> None:
    body = _call(
        {
            "prompt": "hi",
            "generate_kwargs": {
                "do_sample": False,
                "eos_token_id": [3, 4],
                "bad_words_ids": [[7], [9]],
                "seed": 11,
                "min_length": 8,
            },
        }
    )
    assert (body["temperature"], body["top_k"], body["top_p"]) == (0.0, 0, 1.0)
    assert (body["ignore_eos"], body["stop_token_ids"]) == (True, [3, 4])
    assert body["logit_bias"] == {"7": -100.0, "9": -100.0}
    assert (body["seed"], body["min_tokens"]) == (11, 3)


def test_context_caps_the_new_tokens() -> None:
    assert (
        _call({"prompt": "hi", "generate_kwargs": {"max_length": 900}}, 10, 64)["max_tokens"] == 54
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_beams": 3}, "generate_kwargs.num_beams"),
        ({"typical_p": 0.9}, "generate_kwargs.typical_p"),
        ({"no_repeat_ngram_size": 3}, "generate_kwargs.no_repeat_ngram_size"),
        ({"encoder_no_repeat_ngram_size": 3}, "generate_kwargs.encoder_no_repeat_ngram_size"),
        ({"forced_bos_token_id": 1}, "generate_kwargs.forced_bos_token_id"),
        ({"forced_eos_token_id": 1}, "generate_kwargs.forced_eos_token_id"),
        ({"bad_words_ids": [[1, 2]]}, "generate_kwargs.bad_words_ids"),
    ],
)
def test_what_vllm_cannot_do_is_refused(kwargs: dict[str, Any], field: str) -> None:
    req = PARSER.parse({"prompt": "hi", "generate_kwargs": kwargs})
    with pytest.raises(RequestError) as err:
        check_request(req)
    assert err.value.field == field
    assert "vLLM runtime" in str(err.value)


def test_typical_p_without_sampling_is_harmless() -> None:
    check_request(
        PARSER.parse({"prompt": "hi", "generate_kwargs": {"do_sample": False, "typical_p": 0.5}})
    )


def test_tokenize_bodies() -> None:
    prompt = PARSER.parse({"prompt": "world", "prefix": "hello "})
    assert tokenize_bodies(prompt, "m") == [
        {"model": "m", "prompt": "hello world"},
        {"model": "m", "prompt": "hello ", "add_special_tokens": False},
    ]
    chat = PARSER.parse(
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    )
    (body,) = tokenize_bodies(chat, "m")
    assert (body["add_generation_prompt"], body["continue_final_message"]) == (False, True)


def test_response_shapes() -> None:
    req = PARSER.parse({"prompt": "Hi"})
    completion = {"choices": [{"index": 1, "text": " b"}, {"index": 0, "text": " a"}]}
    assert chat_response(req, completion) == {"Result": "Hi aHi b", "sequences": ["Hi a", "Hi b"]}
    quiet = PARSER.parse({"prompt": "Hi", "return_full_text": False})
    assert chat_response(quiet, {"choices": [{"index": 0, "text": " a"}]}) == {"Result": " a"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 600) | st.floats(-2, 2) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "max_length",
        "num_beams",
        "typical_p",
        "bad_words_ids",
        "top_k",
        "eos_token_id",
        "temperature",
        "do_sample",
        "forced_bos_token_id",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.none() | st.text(max_size=5),
    kwargs=st.dictionaries(KEYS, JSON, max_size=4),
    tokens=st.integers(1, 40),
)
def test_any_body_is_planned_or_refused_with_a_field(
    prompt: str | None, kwargs: dict[str, Any], tokens: int
) -> None:
    body = {"prompt": prompt, "generate_kwargs": kwargs}
    try:
        call = _call(body, tokens, 64)
    except RequestError as exc:
        refused = exc
    else:
        assert 1 <= call["max_tokens"] <= 64 - len(call["prompt"])
        return
    assert refused.field
