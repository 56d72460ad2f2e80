"""Pure translation of validated requests into engine work, with the model's limits.

``plan_chat`` turns ``/chat``'s Hugging Face ``generate`` kwargs into ``SamplingParams`` (or
``BeamParams`` for beam search) the way ``transformers``' text-generation pipeline would read
them; ``plan_openai`` does the same for the OpenAI endpoints. Both check what the static schema
cannot: token ids inside the vocabulary, lengths against the context window, combinations that
``generate`` would reject. Every refusal is a ``RequestError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime.server.errors import ContextLengthError, RequestError
from runtime.server.protocol import GenerateKwargs
from runtime.server.sampling import BeamParams, SamplingParams

GREEDY_TEMPERATURE = 1e-5
"""OpenAI requests with a temperature below this are greedy (as vLLM does)."""


@dataclass(frozen=True)
class ModelLimits:
    """What the planner needs to know about the served model and the server's bounds."""

    vocab_size: int
    context_length: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    max_n: int
    sampling_defaults: Mapping[str, float] = field(default_factory=dict)
    """The model's generation-config defaults for OpenAI requests that leave them unset
    (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``), as vLLM."""


@dataclass(frozen=True)
class Plan:
    """A request ready for the engine: its prompt, its parameters, its number of rows."""

    prompt: tuple[int, ...]
    params: SamplingParams | BeamParams
    n: int


def _check_token(value: int | None, field_name: str, limits: ModelLimits) -> None:
    if value is not None and not 0 <= value < limits.vocab_size:
        raise RequestError(
            f"token id {value} is outside the vocabulary (0 to {limits.vocab_size - 1})",
            field=field_name,
        )


def _check_tokens(values: Sequence[int], field_name: str, limits: ModelLimits) -> None:
    for i, value in enumerate(values):
        _check_token(value, f"{field_name}[{i}]", limits)


def check_prompt_fits(prompt_len: int, limits: ModelLimits, field_name: str) -> None:
    """Refuse a prompt that leaves no room for one generated token."""
    if prompt_len == 0:
        raise RequestError("the prompt is empty", field=field_name)
    if prompt_len >= limits.context_length:
        raise ContextLengthError(
            f"the prompt is {prompt_len} tokens but this model's context window is "
            f"{limits.context_length} tokens, which leaves no room to generate; shorten it",
            field=field_name,
        )


def plan_chat(
    kwargs: GenerateKwargs | None,
    prompt: Sequence[int],
    limits: ModelLimits,
    *,
    prefix_tokens: int = 0,
    hole: bool = False,
    prompt_field: str = "prompt",
) -> Plan:
    """Plan a ``/chat`` request (``prompt`` already tokenized, prefix included)."""
    gk = kwargs or GenerateKwargs()
    f = "generate_kwargs."
    for name in ("pad_token_id", "forced_bos_token_id", "forced_eos_token_id"):
        _check_token(getattr(gk, name), f + name, limits)
    eos = _eos(gk, limits)
    bad_words = _bad_words(gk, limits)
    _check_search(gk, limits)
    tokens, max_new, min_new = _window(
        gk, prompt, limits, prefix_tokens=prefix_tokens, hole=hole, prompt_field=prompt_field
    )
    pad = gk.pad_token_id if gk.pad_token_id is not None else limits.pad_token_id

    if gk.num_beams > 1:
        generate: dict[str, object] = {
            "max_new_tokens": max_new,
            "min_new_tokens": min_new,
            "num_beams": gk.num_beams,
            "num_return_sequences": gk.num_return_sequences,
            "length_penalty": gk.length_penalty,
            "early_stopping": gk.early_stopping,
            "do_sample": gk.do_sample,
            "repetition_penalty": gk.repetition_penalty,
            "no_repeat_ngram_size": gk.no_repeat_ngram_size,
            "encoder_no_repeat_ngram_size": gk.encoder_no_repeat_ngram_size,
            "bad_words_ids": [list(w) for w in bad_words] if bad_words else None,
            "forced_bos_token_id": gk.forced_bos_token_id,
            "forced_eos_token_id": gk.forced_eos_token_id,
            "remove_invalid_values": bool(gk.remove_invalid_values),
            "eos_token_id": list(eos),
            "pad_token_id": pad,
        }
        if gk.do_sample:
            generate.update(temperature=gk.temperature, top_k=gk.top_k, top_p=gk.top_p)
            generate["typical_p"] = gk.typical_p
        return Plan(
            prompt=tuple(tokens),
            params=BeamParams(tuple(generate.items()), gk.num_return_sequences),
            n=gk.num_return_sequences,
        )

    params = SamplingParams(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        do_sample=gk.do_sample,
        temperature=gk.temperature,
        top_k=gk.top_k,
        top_p=gk.top_p,
        typical_p=gk.typical_p,
        repetition_penalty=gk.repetition_penalty,
        no_repeat_ngram_size=gk.no_repeat_ngram_size,
        encoder_no_repeat_ngram_size=gk.encoder_no_repeat_ngram_size,
        bad_words_ids=bad_words,
        forced_bos_token_id=gk.forced_bos_token_id,
        forced_eos_token_id=gk.forced_eos_token_id,
        remove_invalid_values=bool(gk.remove_invalid_values),
        eos_token_ids=eos,
        seed=gk.seed,
    )
    return Plan(prompt=tuple(tokens), params=params, n=gk.num_return_sequences)


@dataclass(frozen=True)
class OpenAISampling:
    """The sampling fields shared by both OpenAI request types."""

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    n: int
    seed: int | None
    presence_penalty: float
    frequency_penalty: float
    top_k: int | None
    min_p: float | None
    repetition_penalty: float | None
    min_tokens: int
    ignore_eos: bool
    stop_token_ids: list[int] | None


def plan_openai(
    req: OpenAISampling,
    prompt: Sequence[int],
    limits: ModelLimits,
    *,
    prompt_field: str,
) -> Plan:
    """Plan an OpenAI completion or chat completion."""
    if req.n > limits.max_n:
        raise RequestError(
            f"{req.n} is more than this server allows ({limits.max_n}, --max-n)", field="n"
        )
    stop_ids = list(req.stop_token_ids or [])
    _check_tokens(stop_ids, "stop_token_ids", limits)
    check_prompt_fits(len(prompt), limits, prompt_field)
    room = limits.context_length - len(prompt)
    max_new = room if req.max_tokens is None else min(req.max_tokens, room)
    defaults = limits.sampling_defaults
    temperature = (
        req.temperature if req.temperature is not None else defaults.get("temperature", 1.0)
    )
    top_p = req.top_p if req.top_p is not None else defaults.get("top_p", 1.0)
    top_k = req.top_k if req.top_k is not None else int(defaults.get("top_k", 0))
    min_p = req.min_p if req.min_p is not None else defaults.get("min_p", 0.0)
    repetition = (
        req.repetition_penalty
        if req.repetition_penalty is not None
        else defaults.get("repetition_penalty", 1.0)
    )
    eos = (
        tuple(stop_ids)
        if req.ignore_eos
        else tuple(dict.fromkeys([*limits.eos_token_ids, *stop_ids]))
    )
    params = SamplingParams(
        max_new_tokens=max_new,
        min_new_tokens=min(req.min_tokens, max_new),
        do_sample=temperature >= GREEDY_TEMPERATURE,
        temperature=temperature if temperature >= GREEDY_TEMPERATURE else 1.0,
        top_k=max(top_k, 0),
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        eos_token_ids=eos,
        seed=req.seed,
    )
    return Plan(prompt=tuple(prompt), params=params, n=req.n)


def _eos(gk: GenerateKwargs, limits: ModelLimits) -> tuple[int, ...]:
    f = "generate_kwargs.eos_token_id"
    if gk.eos_token_id is None:
        return limits.eos_token_ids
    if isinstance(gk.eos_token_id, int):
        _check_token(gk.eos_token_id, f, limits)
        return (gk.eos_token_id,)
    _check_tokens(gk.eos_token_id, f, limits)
    return tuple(gk.eos_token_id)


def _bad_words(gk: GenerateKwargs, limits: ModelLimits) -> tuple[tuple[int, ...], ...] | None:
    if gk.bad_words_ids is None:
        return None
    f = "generate_kwargs."
    words = [w if isinstance(w, list) else [w] for w in gk.bad_words_ids]
    for i, word in enumerate(words):
        if not word:
            raise RequestError("an empty token sequence", field=f"{f}bad_words_ids[{i}]")
        _check_tokens(word, f"{f}bad_words_ids[{i}]", limits)
    return tuple(tuple(w) for w in words) or None


def _check_search(gk: GenerateKwargs, limits: ModelLimits) -> None:
    """Sampling, beams and returned sequences that go together, within the server's --max-n."""
    f = "generate_kwargs."
    if gk.do_sample and gk.temperature == 0:
        raise RequestError(
            "0 is not valid when do_sample is true; use do_sample=false for greedy decoding "
            "or a temperature > 0",
            field=f + "temperature",
        )
    if gk.num_return_sequences > limits.max_n:
        raise RequestError(
            f"{gk.num_return_sequences} is more than this server allows ({limits.max_n}, --max-n)",
            field=f + "num_return_sequences",
        )
    if gk.num_beams > limits.max_n:
        raise RequestError(
            f"{gk.num_beams} is more than this server allows ({limits.max_n}, --max-n)",
            field=f + "num_beams",
        )
    if gk.num_beams > 1 and gk.num_return_sequences > gk.num_beams:
        raise RequestError(
            f"{gk.num_return_sequences} is more than num_beams ({gk.num_beams}); beam search "
            "returns at most num_beams sequences",
            field=f + "num_return_sequences",
        )
    if gk.num_beams == 1 and not gk.do_sample and gk.num_return_sequences > 1:
        raise RequestError(
            f"{gk.num_return_sequences} identical greedy sequences make no sense; set "
            "do_sample=true or num_beams >= num_return_sequences",
            field=f + "num_return_sequences",
        )
    if gk.min_length > gk.max_length:
        raise RequestError(
            f"{gk.min_length} is more than max_length ({gk.max_length})", field=f + "min_length"
        )


def _window(
    gk: GenerateKwargs,
    prompt: Sequence[int],
    limits: ModelLimits,
    *,
    prefix_tokens: int,
    hole: bool,
    prompt_field: str,
) -> tuple[list[int], int, int]:
    """The prompt tokens kept (``hole``: the tail that leaves room) and the new-token bounds."""
    f = "generate_kwargs."
    tokens = list(prompt)
    context = limits.context_length
    if not hole and len(tokens) >= context:
        raise ContextLengthError(
            f"the prompt is {len(tokens)} tokens but this model's context window is "
            f"{context} tokens, which leaves no room to generate; shorten it or set "
            "handle_long_generation to 'hole'",
            field=prompt_field,
        )
    if gk.max_new_tokens is not None:
        max_new = gk.max_new_tokens
    else:
        max_new = gk.max_length + prefix_tokens - len(tokens)
        if max_new < 1:
            raise RequestError(
                f"{gk.max_length} leaves no room to generate: the prompt alone is "
                f"{len(tokens) - prefix_tokens} tokens; raise max_length or set max_new_tokens",
                field=f + "max_length",
            )
    if hole and len(tokens) + max_new > context:
        keep = context - max_new
        if keep <= 0:
            raise ContextLengthError(
                f"{max_new} new tokens do not fit in the model's context window "
                f"({context} tokens), even with handle_long_generation='hole'; ask for fewer",
                field=f + ("max_new_tokens" if gk.max_new_tokens is not None else "max_length"),
            )
        tokens = tokens[-keep:]
    check_prompt_fits(len(tokens), limits, prompt_field)
    max_new = min(max_new, context - len(tokens))
    min_new = max(gk.min_new_tokens or 0, gk.min_length + prefix_tokens - len(prompt), 0)
    min_new = min(min_new, max_new)
    return tokens, max_new, min_new
