"""``POST /chat`` over real HTTP: the seed's curl bodies, pipeline semantics, and refusals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import torch

from runtime.server.loader import LoadedModel

# The two bodies of the seed's curl examples, byte for byte.
SEED_BASIC = '{"prompt":"YOUR_PROMPT_HERE"}'
SEED_FULL = """{
        "prompt":"YOUR_PROMPT_HERE",
        "return_full_text": false,
        "clean_up_tokenization_spaces": false,
        "prefix": null,
        "handle_long_generation": null,
        "generate_kwargs": {
                "max_length":200,
                "min_length":0,
                "do_sample":true,
                "early_stopping":false,
                "num_beams":1,
                "num_beam_groups":1,
                "diversity_penalty":0.0,
                "temperature":1.0,
                "top_k":10,
                "top_p":1,
                "typical_p":1,
                "repetition_penalty":1,
                "length_penalty":1,
                "no_repeat_ngram_size":0,
                "encoder_no_repeat_ngram_size":0,
                "bad_words_ids":null,
                "num_return_sequences":1,
                "output_scores":false,
                "return_dict_in_generate":false,
                "forced_bos_token_id":null,
                "forced_eos_token_id":null,
                "remove_invalid_values":null
            }
        }"""
SEED_HEADERS = {"accept": "application/json", "Content-Type": "application/json"}


def chat(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/chat", json=body)


def pipeline_text(loaded: LoadedModel, prompt: str, **kwargs: Any) -> str:
    """What the seed-era server computed: one transformers text-generation pipeline call."""
    from transformers import pipeline

    generator = pipeline("text-generation", model=loaded.model, tokenizer=loaded.tokenizer)
    with torch.inference_mode():
        out = generator(prompt, pad_token_id=loaded.limits.pad_token_id, **kwargs)
    return str(out[0]["generated_text"])


@pytest.mark.parametrize("body", [SEED_BASIC, SEED_FULL], ids=["basic", "full"])
def test_seed_curl_bodies_verbatim(http: httpx.Client, body: str) -> None:
    response = http.post("/chat", content=body.encode(), headers=SEED_HEADERS)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"Result"}
    assert isinstance(result["Result"], str)
    if body == SEED_BASIC:  # return_full_text defaults to true: the prompt comes back first
        assert result["Result"].startswith("YOUR_PROMPT_HERE")
        assert len(result["Result"]) > len("YOUR_PROMPT_HERE")


@pytest.mark.parametrize(
    ("body", "pipeline_kwargs"),
    [
        (
            {
                "prompt": "The Kaito controller",
                "generate_kwargs": {"do_sample": False, "max_length": 30},
            },
            {"do_sample": False, "max_length": 30},
        ),
        (
            {
                "prompt": "The Kaito controller",
                "return_full_text": False,
                "prefix": "Inference with adapters. ",
                "generate_kwargs": {
                    "do_sample": False,
                    "max_length": 20,
                    "repetition_penalty": 1.3,
                },
            },
            {
                "do_sample": False,
                "max_length": 20,
                "repetition_penalty": 1.3,
                "return_full_text": False,
                "prefix": "Inference with adapters. ",
            },
        ),
        (
            {
                "prompt": "Users just need",
                "clean_up_tokenization_spaces": True,
                "generate_kwargs": {
                    "do_sample": False,
                    "max_new_tokens": 12,
                    "no_repeat_ngram_size": 2,
                },
            },
            {
                "do_sample": False,
                "max_new_tokens": 12,
                "no_repeat_ngram_size": 2,
                "clean_up_tokenization_spaces": True,
            },
        ),
    ],
    ids=["full-text", "prefix-new-text", "max-new-tokens"],
)
def test_greedy_chat_equals_the_pipeline(
    http: httpx.Client,
    loaded_tiny: LoadedModel,
    body: dict[str, Any],
    pipeline_kwargs: dict[str, Any],
) -> None:
    response = chat(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["Result"] == pipeline_text(
        loaded_tiny, body["prompt"], **pipeline_kwargs
    )


def test_messages_use_the_chat_template(http: httpx.Client, loaded_tiny: LoadedModel) -> None:
    messages = [{"role": "user", "content": "What is KAITO?"}]
    response = chat(
        http, {"messages": messages, "generate_kwargs": {"do_sample": False, "max_new_tokens": 8}}
    )
    assert response.status_code == 200, response.text
    ids = loaded_tiny.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )["input_ids"]
    prompt = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded_tiny.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=8,
            pad_token_id=loaded_tiny.limits.pad_token_id,
        )
    expected = loaded_tiny.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert response.json() == {"Result": expected}


def test_several_sequences_are_joined_and_listed(http: httpx.Client) -> None:
    body = {
        "prompt": "Kaito",
        "return_full_text": False,
        "generate_kwargs": {"max_new_tokens": 6, "num_return_sequences": 3, "seed": 7},
    }
    first = chat(http, body).json()
    assert len(first["sequences"]) == 3
    assert first["Result"] == "".join(first["sequences"])
    assert chat(http, body).json() == first  # seeded: reproducible


def test_beam_search(http: httpx.Client, loaded_tiny: LoadedModel) -> None:
    body = {
        "prompt": "The adapters",
        "generate_kwargs": {
            "do_sample": False,
            "num_beams": 3,
            "max_new_tokens": 8,
            "early_stopping": True,
        },
    }
    response = chat(http, body)
    assert response.status_code == 200, response.text
    expected = pipeline_text(
        loaded_tiny,
        "The adapters",
        do_sample=False,
        num_beams=3,
        max_new_tokens=8,
        early_stopping=True,
    )
    assert response.json()["Result"] == expected


def test_output_scores_are_accepted(http: httpx.Client) -> None:
    body = {
        "prompt": "Kaito",
        "generate_kwargs": {
            "max_new_tokens": 3,
            "output_scores": True,
            "return_dict_in_generate": True,
        },
    }
    response = chat(http, body)
    assert response.status_code == 200
    assert set(response.json()) == {"Result"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "generate_kwargs": {"max_length": -1}}, "generate_kwargs.max_length"),
        ({"prompt": "x", "generate_kwargs": {"num_beams": 0}}, "generate_kwargs.num_beams"),
        ({"prompt": "x", "generate_kwargs": {"top_p": 7}}, "generate_kwargs.top_p"),
        ({"prompt": "x", "generate_kwargs": {"temperature": 0}}, "generate_kwargs.temperature"),
        ({"prompt": "x", "generate_kwargs": {"top_k": "ten"}}, "generate_kwargs.top_k"),
        (
            {"prompt": "x", "generate_kwargs": {"eos_token_id": 99999}},
            "generate_kwargs.eos_token_id",
        ),
        (
            {"prompt": "x", "generate_kwargs": {"bad_words_ids": [[1, 70000]]}},
            "generate_kwargs.bad_words_ids[0][1]",
        ),
        (
            {"prompt": "x", "generate_kwargs": {"num_return_sequences": 2, "do_sample": False}},
            "generate_kwargs.num_return_sequences",
        ),
        (
            {"prompt": "x", "generate_kwargs": {"num_beam_groups": 2, "num_beams": 4}},
            "generate_kwargs.num_beam_groups",
        ),
        ({"prompt": "x", "generate_kwargs": {"max_length": 1}}, "generate_kwargs.max_length"),
        ({"prompt": "x", "generate_kwargs": {"frobnicate": 1}}, "generate_kwargs.frobnicate"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "messages"),
        ({"prompt": "x " * 600}, "prompt"),
        ({"prompt": "x", "handle_long_generation": "middle"}, "handle_long_generation"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = chat(http, body)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(field + ":"), detail


def test_missing_prompt_keeps_kaitos_message(http: httpx.Client) -> None:
    response = chat(http, {"return_full_text": True, "generate_kwargs": {"max_length": 50}})
    assert response.status_code == 400
    assert "Text generation parameter prompt required" in response.json()["detail"]


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"prompt": NaN}', b'{"prompt": "\\ud800"}', b"[" * 5000]
)
def test_malformed_bodies_are_400(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/chat", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "detail" in response.json()


def test_long_prompt_with_hole_is_cut_from_the_left(http: httpx.Client) -> None:
    prompt = "word " * 600  # longer than the 512-token context
    body = {
        "prompt": prompt,
        "handle_long_generation": "hole",
        "generate_kwargs": {"max_new_tokens": 4},
    }
    response = chat(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["Result"].startswith(prompt)


def test_max_length_is_capped_by_the_context(http: httpx.Client) -> None:
    body = {
        "prompt": "Kaito",
        "return_full_text": False,
        "generate_kwargs": {"max_length": 10**9, "do_sample": False, "eos_token_id": 3},
    }
    response = chat(http, body)
    assert response.status_code == 200, response.text
    assert json.loads(response.text)["Result"]
