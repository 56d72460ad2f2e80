"""The OpenAI-compatible API, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import torch

from runtime.server.loader import LoadedModel
from tests.runtime.harness import MODEL_NAME, RunningServer


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def lone_generate(loaded: LoadedModel, ids: list[int], max_new: int) -> list[int]:
    prompt = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=max_new,
            pad_token_id=loaded.limits.pad_token_id,
        )
    generated: list[int] = out[0, len(ids) :].tolist()
    return generated


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]


def test_completion_greedy_matches_generate(
    client: openai.OpenAI, loaded_tiny: LoadedModel
) -> None:
    prompt = "The Kaito controller adds an init container"
    completion = client.completions.create(
        model=MODEL_NAME, prompt=prompt, max_tokens=10, temperature=0
    )
    ids = list(loaded_tiny.tokenizer(prompt)["input_ids"])
    expected = lone_generate(loaded_tiny, ids, 10)
    choice = completion.choices[0]
    assert choice.text == loaded_tiny.tokenizer.decode(expected, skip_special_tokens=True)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ids)
    assert completion.usage.completion_tokens == len(expected)
    assert completion.usage.total_tokens == len(ids) + len(expected)
    assert choice.finish_reason in ("length", "stop")


def test_completion_several_prompts_and_choices(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=MODEL_NAME, prompt=["one", "two"], n=2, max_tokens=4, seed=3, echo=True
    )
    assert sorted(c.index for c in completion.choices) == [0, 1, 2, 3]
    by_index = {c.index: c.text for c in completion.choices}
    assert by_index[0].startswith("one")
    assert by_index[3].startswith("two")


def test_token_id_prompts_are_as_long_as_the_context_allows(
    client: openai.OpenAI, loaded_tiny: LoadedModel
) -> None:
    text = "The Kaito controller adds an init container for each adapter. " * 8
    ids = list(loaded_tiny.tokenizer(text)["input_ids"])
    assert len(ids) > 64  # longer than the batch limit on the number of prompts
    completion = client.completions.create(
        model=MODEL_NAME, prompt=ids, max_tokens=5, temperature=0
    )
    expected = loaded_tiny.tokenizer.decode(
        lone_generate(loaded_tiny, ids, 5), skip_special_tokens=True
    )
    # A generation that stops inside a multi-byte character may end without its U+FFFD.
    assert completion.choices[0].text.rstrip("\ufffd") == expected.rstrip("\ufffd")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(ids)


def test_too_many_prompts_in_one_request_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL_NAME, prompt=["x"] * 65, max_tokens=1)
    assert "65 prompts" in str(err.value)
    assert err.value.body is not None
    assert err.value.body.get("param") == "prompt"  # type: ignore[union-attr]


def test_chat_completion(client: openai.OpenAI, loaded_tiny: LoadedModel) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What does KAITO do?"},
    ]
    reply = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=8, temperature=0
    )
    ids = loaded_tiny.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True
    )["input_ids"]
    expected = lone_generate(loaded_tiny, list(ids), 8)
    message = reply.choices[0].message
    assert message.role == "assistant"
    assert message.content == loaded_tiny.tokenizer.decode(expected, skip_special_tokens=True)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(ids)


def test_chat_streaming_equals_non_streaming(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Tell me about adapters"}]
    whole = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: list[str] = []
    reasons = []
    usage = None
    roles = []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert roles == ["assistant"]
    assert "".join(parts) == whole.choices[0].message.content
    assert reasons == [whole.choices[0].finish_reason]
    assert usage is not None
    assert whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completion_streaming(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model=MODEL_NAME, prompt="Inference", max_tokens=12, temperature=0
    )
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL_NAME, prompt="Inference", max_tokens=12, temperature=0, stream=True
        )
        if c.choices
    )
    assert text == whole.choices[0].text


def test_stop_strings_end_the_text(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model=MODEL_NAME, prompt="The adapters", max_tokens=40, temperature=0
    )
    text = whole.choices[0].text
    stop = next((text[i : i + 2] for i in range(3, len(text) - 2) if text[i : i + 2].strip()), None)
    assert stop is not None
    cut = client.completions.create(
        model=MODEL_NAME, prompt="The adapters", max_tokens=40, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL_NAME,
            prompt="The adapters",
            max_tokens=40,
            temperature=0,
            stop=stop,
            stream=True,
        )
        if c.choices
    )
    assert streamed == cut.choices[0].text


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def ask() -> str:
        out = client.completions.create(
            model=MODEL_NAME, prompt="Kaito", max_tokens=12, temperature=1.0, top_p=0.9, seed=42
        )
        return out.choices[0].text

    assert ask() == ask()


def test_errors_use_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=-3)
    assert bad.value.param == "max_tokens"
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.completions.create(model=MODEL_NAME, prompt="word " * 600, max_tokens=3)
    assert long_prompt.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"


def test_unsupported_fields_are_refused_by_name(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "logprobs": True},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logprobs"
    response = http.post("/v1/completions", json={"prompt": "x", "suffix": "y"})
    assert response.json()["error"]["param"] == "suffix"


def test_max_tokens_are_capped_by_the_context(http: httpx.Client) -> None:
    response = http.post(
        "/v1/completions",
        json={"prompt": "Kaito", "max_tokens": 100000, "temperature": 0, "ignore_eos": True},
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["total_tokens"] == 512  # the tiny model's context window
