"""Pure parts of the server: settings, planning, detokenization, schema errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.server.detok import TextStream
from runtime.server.errors import ContextLengthError, RequestError, SettingsError
from runtime.server.planning import ModelLimits, OpenAISampling, plan_chat, plan_openai
from runtime.server.protocol import ChatRequest, GenerateKwargs
from runtime.server.sampling import BeamParams, SamplingParams
from runtime.server.schema import Parser
from runtime.server.settings import Settings, parse_settings, settings_help

LIMITS = ModelLimits(vocab_size=100, context_length=50, eos_token_ids=(1,), pad_token_id=2, max_n=4)


# ---- settings --------------------------------------------------------------------------------


def test_help_documents_every_setting_with_bounds() -> None:
    text = " ".join(settings_help().split())
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in text
    assert "--port PORT TCP port (the Service's target port) [1..65535] (default: 5000)" in text
    assert "--print-openapi" in text


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"port": 0}, "--port"),
        ({"max_num_seqs": 0}, "--max-num-seqs"),
        ({"dtype": "int8"}, "--dtype"),
        ({"max_n": 9, "max_num_seqs": 4}, "--max-n"),
    ],
)
def test_bad_settings_name_the_option(overrides: dict[str, object], flag: str) -> None:
    with pytest.raises(SettingsError, match=flag):
        Settings(**overrides)  # type: ignore[arg-type]


def test_parse_settings() -> None:
    settings, namespace = parse_settings(
        [
            "--model",
            "/models/falcon-7b/",
            "--adapter",
            "a=0.2",
            "--adapter",
            "b",
            "--no-allow-download",
        ]
    )
    assert settings.model_name == "falcon-7b"
    assert settings.adapter == ("a=0.2", "b")
    assert not namespace.print_openapi
    assert parse_settings(["--served-model-name", "phi-3"])[0].model_name == "phi-3"


# ---- planning --------------------------------------------------------------------------------


def chat_plan(prompt_len: int, **kwargs: object) -> tuple[SamplingParams, int]:
    plan = plan_chat(GenerateKwargs(**kwargs), list(range(3, 3 + prompt_len)), LIMITS)  # type: ignore[arg-type]
    assert isinstance(plan.params, SamplingParams)
    return plan.params, len(plan.prompt)


def test_max_length_counts_the_prompt() -> None:
    params, _ = chat_plan(5, max_length=20, min_length=8)
    assert params.max_new_tokens == 15
    assert params.min_new_tokens == 3
    assert chat_plan(5, max_new_tokens=7)[0].max_new_tokens == 7


def test_defaults_are_kaitos() -> None:
    params, _ = chat_plan(5)
    assert params.do_sample
    assert params.top_k == 10
    assert params.max_new_tokens == 45  # max_length 200, capped by the 50-token context
    assert params.eos_token_ids == (1,)


def test_prefix_tokens_do_not_count_against_max_length() -> None:
    plan = plan_chat(GenerateKwargs(max_length=10), list(range(3, 11)), LIMITS, prefix_tokens=4)
    assert plan.params.max_new_tokens == 6  # type: ignore[union-attr]


def test_hole_cuts_the_prompt_from_the_left() -> None:
    prompt = list(range(3, 63))  # 60 tokens, context 50
    plan = plan_chat(GenerateKwargs(max_new_tokens=10), prompt, LIMITS, hole=True)
    assert plan.prompt == tuple(prompt[-40:])
    with pytest.raises(ContextLengthError) as error:
        plan_chat(GenerateKwargs(max_new_tokens=10), prompt, LIMITS)
    assert error.value.field == "prompt"
    with pytest.raises(ContextLengthError):
        plan_chat(GenerateKwargs(max_new_tokens=60), prompt, LIMITS, hole=True)


def test_beams_become_one_generate_call() -> None:
    plan = plan_chat(
        GenerateKwargs(num_beams=3, num_return_sequences=2, do_sample=False), [5, 6], LIMITS
    )
    assert isinstance(plan.params, BeamParams)
    kwargs = plan.params.kwargs()
    assert kwargs["num_beams"] == 3
    assert "temperature" not in kwargs  # greedy beams: no sampling kwargs (generate would warn)
    assert plan.n == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"forced_bos_token_id": 100}, "generate_kwargs.forced_bos_token_id"),
        ({"eos_token_id": [1, 200]}, "generate_kwargs.eos_token_id[1]"),
        ({"bad_words_ids": [[]]}, "generate_kwargs.bad_words_ids[0]"),
        ({"num_return_sequences": 5}, "generate_kwargs.num_return_sequences"),
        ({"num_beams": 2, "num_return_sequences": 3}, "generate_kwargs.num_return_sequences"),
        ({"min_length": 30, "max_length": 20}, "generate_kwargs.min_length"),
        ({"max_length": 5}, "generate_kwargs.max_length"),
    ],
)
def test_semantic_refusals_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(RequestError) as error:
        chat_plan(6, **kwargs)
    assert error.value.field == field


def openai(**overrides: object) -> OpenAISampling:
    base = OpenAISampling(
        max_tokens=None,
        temperature=None,
        top_p=None,
        n=1,
        seed=None,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        top_k=None,
        min_p=None,
        repetition_penalty=None,
        min_tokens=0,
        ignore_eos=False,
        stop_token_ids=None,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_openai_planning() -> None:
    plan = plan_openai(openai(), [5] * 10, LIMITS, prompt_field="prompt")
    params = plan.params
    assert isinstance(params, SamplingParams)
    assert params.max_new_tokens == 40  # the rest of the context
    assert params.do_sample
    assert params.temperature == 1.0
    greedy = plan_openai(
        openai(temperature=0, max_tokens=500), [5] * 10, LIMITS, prompt_field="prompt"
    )
    assert not greedy.params.do_sample  # type: ignore[union-attr]
    assert greedy.params.max_new_tokens == 40  # type: ignore[union-attr]
    no_eos = plan_openai(
        openai(ignore_eos=True, stop_token_ids=[7]), [5], LIMITS, prompt_field="prompt"
    )
    assert no_eos.params.eos_token_ids == (7,)  # type: ignore[union-attr]
    defaults = dataclasses.replace(LIMITS, sampling_defaults={"temperature": 0.6, "top_p": 0.9})
    tuned = plan_openai(openai(), [5], defaults, prompt_field="prompt").params
    assert (tuned.temperature, tuned.top_p) == (0.6, 0.9)  # type: ignore[union-attr]
    with pytest.raises(ContextLengthError):
        plan_openai(openai(), [5] * 50, LIMITS, prompt_field="messages")
    with pytest.raises(RequestError, match="--max-n"):
        plan_openai(openai(n=5), [5], LIMITS, prompt_field="prompt")


# ---- detokenization --------------------------------------------------------------------------

# A toy byte-level vocabulary: token i decodes to CHARS[i]; 90/91 are halves of "é".
CHARS = {i: chr(ord("a") + i) for i in range(26)} | {26: " "}


def decode(ids: Sequence[int]) -> str:
    data = b"".join(b"\xc3" if i == 90 else b"\xa9" if i == 91 else CHARS[i].encode() for i in ids)
    return data.decode("utf-8", errors="replace")


def encode(text: str) -> list[int]:
    return [26 if c == " " else ord(c) - ord("a") for c in text]


def test_stream_without_stop_strings() -> None:
    stream = TextStream(decode)
    assert [stream.push(t) for t in encode("ab")] == ["a", "b"]
    assert stream.push(90) == ""  # half a character: held back
    assert stream.push(91) == "é"
    assert stream.finish() == ""
    assert stream.text == "abé"


def test_stream_cuts_at_a_stop_string_split_across_tokens() -> None:
    stream = TextStream(decode, ["c d", "zz"])
    out = "".join(stream.push(t) for t in encode("ab c dxyz"))
    assert stream.stopped
    assert out == "ab "
    assert stream.text == "ab "


@given(
    st.text(alphabet="abc ", max_size=30),
    st.lists(st.text(alphabet="abc ", min_size=1, max_size=3), max_size=3),
)
def test_stream_deltas_add_up_to_the_cut_text(text: str, stops: list[str]) -> None:
    stream = TextStream(decode, stops)
    sent = "".join(stream.push(t) for t in encode(text)) + stream.finish()
    expected = text
    for end in range(len(text) + 1):  # generation stops at the first stop string completed
        cuts = [text[:end].find(s) for s in stops if s in text[:end]]
        if cuts:
            expected = text[: min(cuts)]
            break
    assert sent == expected == stream.text


# ---- schema ----------------------------------------------------------------------------------


def test_parser_builds_typed_requests_and_names_nested_fields() -> None:
    parser = Parser(ChatRequest)
    parsed = parser.parse({"prompt": "x", "generate_kwargs": {"top_p": 1, "max_length": 20.0}})
    assert parsed.generate_kwargs.top_p == 1.0
    assert isinstance(parsed.generate_kwargs.top_p, float)
    assert isinstance(parsed.generate_kwargs.max_length, int)
    with pytest.raises(RequestError) as error:
        parser.parse({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})
    assert error.value.field == "messages[0].content[0].text"
    with pytest.raises(RequestError) as unknown:
        parser.parse({"prompt": "x", "generate_kwargs": {"max_tokens": 3}})
    assert unknown.value.field == "generate_kwargs.max_tokens"
    assert "max_new_tokens" in str(unknown.value)  # the allowed fields are listed
