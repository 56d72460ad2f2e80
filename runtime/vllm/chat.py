"""The seed's ``POST /chat`` on vLLM: parse and check the body, translate it to vLLM's API. Pure.

A client written for the transformers runtime keeps working when the Workspace's runtime is
vLLM. ``max_length`` / ``min_length`` count the prompt (as in transformers), so the front first
asks vLLM's ``/tokenize`` for the prompt's length and context size, then sends
``/v1/completions`` (``prompt``) or ``/v1/chat/completions`` (``messages``) with
``max_tokens = min(max_length, context) − prompt tokens``.

Every ``generate_kwargs`` key of the seed is accepted with its type and range checked. Keys that
only matter for beam search or for scores (``early_stopping``, ``length_penalty``,
``diversity_penalty``, ``output_scores``, ``return_dict_in_generate``, ``pad_token_id``,
``remove_invalid_values``) do not change the text and are accepted as is. What vLLM cannot do is
refused with a 400 that names the key: beam search (``num_beams`` > 1, ``num_beam_groups`` > 1),
``typical_p`` ≠ 1, ``no_repeat_ngram_size`` > 0, ``encoder_no_repeat_ngram_size`` > 0,
``forced_bos_token_id`` / ``forced_eos_token_id``, multi-token ``bad_words_ids`` and
``num_return_sequences`` > 1 (use the OpenAI API's ``n``). The transformers runtime serves all of
them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

GENERATE_KWARGS_DEFAULTS: Mapping[str, Any] = {
    "max_length": 200,
    "min_length": 0,
    "do_sample": True,
    "early_stopping": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "temperature": 1.0,
    "top_k": 10,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "return_dict_in_generate": False,
    "pad_token_id": None,
    "eos_token_id": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": None,
}
"""The seed's generate_kwargs with KAITO's defaults (pad/eos: the tokenizer's)."""

TOP_LEVEL_KEYS = (
    "prompt",
    "messages",
    "return_full_text",
    "clean_up_tokenization_spaces",
    "prefix",
    "handle_long_generation",
    "generate_kwargs",
)


class ChatBody(TypedDict, total=False):
    """The seed's ``/chat`` request body (wire type)."""

    prompt: str
    messages: list[dict[str, str]]
    return_full_text: bool
    clean_up_tokenization_spaces: bool
    prefix: str | None
    handle_long_generation: str | None
    generate_kwargs: dict[str, Any]


class ChatResult(TypedDict):
    """The ``/chat`` answer, as KAITO's transformers server gives it."""

    Result: str


class ChatRequestError(ValueError):
    """A bad ``/chat`` body: ``field`` is the offending key (dotted), the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ChatRequest:
    """A checked ``/chat`` request."""

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str = ""
    handle_long_generation: Literal["hole"] | None = None
    max_length: int = 200
    min_length: int = 0
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 10
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    banned_token_ids: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    """The accepted keys that do not change the text (beam-only, scores)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(kwargs: Mapping[str, Any], key: str, minimum: int) -> int:
    value = kwargs[key]
    if not _is_int(value) or value < minimum:
        raise ChatRequestError(
            f"generate_kwargs.{key}", f"must be an integer ≥ {minimum}, got {value!r}"
        )
    return int(value)


def _float(
    kwargs: Mapping[str, Any],
    key: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    value = kwargs[key]
    bad = not _is_number(value) or value > high or (value <= low if low_open else value < low)
    if bad:
        bracket = "(" if low_open else "["
        upper = "∞)" if high == math.inf else f"{high:g}]"
        raise ChatRequestError(
            f"generate_kwargs.{key}",
            f"must be a number in {bracket}{low:g}, {upper}, got {value!r}",
        )
    return float(value)


def _bool(kwargs: Mapping[str, Any], key: str, where: str = "generate_kwargs.") -> bool:
    value = kwargs[key]
    if not isinstance(value, bool):
        raise ChatRequestError(f"{where}{key}", f"must be true or false, got {value!r}")
    return value


def _unsupported(key: str, value: Any, why: str) -> ChatRequestError:
    return ChatRequestError(
        f"generate_kwargs.{key}",
        f"{value!r} is not supported by the vLLM runtime ({why}); use the transformers runtime "
        "(annotation kaito.sh/runtime: transformers) or leave it at its default",
    )


def _token_ids(value: Any, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if _is_int(value) and value >= 0:
        return (int(value),)
    if isinstance(value, list) and value and all(_is_int(v) and v >= 0 for v in value):
        return tuple(int(v) for v in value)
    raise ChatRequestError(
        f"generate_kwargs.{key}", f"must be a token id or a list of token ids, got {value!r}"
    )


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise ChatRequestError("messages", "must be a non-empty list of {role, content} objects")
    out = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise ChatRequestError(
                f"messages[{i}]", "must be an object with string 'role' and 'content'"
            )
        out.append({"role": message["role"], "content": message["content"]})
    return tuple(out)


def parse_chat_request(body: Any) -> ChatRequest:
    """Check a ``/chat`` body; raise ``ChatRequestError`` naming the first bad field."""
    if not isinstance(body, dict):
        raise ChatRequestError("body", "must be a JSON object with a 'prompt'")
    unknown = sorted(set(body) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ChatRequestError(
            unknown[0], f"is not a /chat field; the fields are {', '.join(TOP_LEVEL_KEYS)}"
        )
    prompt = body.get("prompt")
    messages = None
    if "messages" in body and body["messages"] is not None:
        if prompt is not None:
            raise ChatRequestError("messages", "give either 'prompt' or 'messages', not both")
        messages = _messages(body["messages"])
    elif prompt is None:
        raise ChatRequestError("prompt", "is required (the text to continue), or give 'messages'")
    elif not isinstance(prompt, str):
        raise ChatRequestError("prompt", f"must be a string, got {type(prompt).__name__}")
    flags = {"return_full_text": True, "clean_up_tokenization_spaces": False}
    for key in flags:
        if key in body and body[key] is not None:
            flags[key] = _bool(body, key, where="")
    prefix = body.get("prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ChatRequestError("prefix", f"must be a string or null, got {prefix!r}")
    hlg = body.get("handle_long_generation")
    if hlg not in (None, "hole"):
        raise ChatRequestError("handle_long_generation", f"must be null or 'hole', got {hlg!r}")
    raw = body.get("generate_kwargs")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ChatRequestError("generate_kwargs", "must be an object")
    unknown = sorted(set(raw) - set(GENERATE_KWARGS_DEFAULTS))
    if unknown:
        raise ChatRequestError(
            f"generate_kwargs.{unknown[0]}",
            f"is not a known generate key; known keys: {', '.join(GENERATE_KWARGS_DEFAULTS)}",
        )
    kw = {**GENERATE_KWARGS_DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    max_length = _int(kw, "max_length", 1)
    min_length = _int(kw, "min_length", 0)
    if min_length > max_length:
        raise ChatRequestError(
            "generate_kwargs.min_length",
            f"{min_length} is larger than max_length {max_length}",
        )
    do_sample = _bool(kw, "do_sample")
    temperature = _float(kw, "temperature", low=0.0, low_open=True)
    top_k = _int(kw, "top_k", 0)
    top_p = _float(kw, "top_p", low=0.0, high=1.0, low_open=True)
    typical_p = _float(kw, "typical_p", low=0.0, high=1.0, low_open=True)
    repetition_penalty = _float(kw, "repetition_penalty", low=0.0, low_open=True)
    _float(kw, "length_penalty", low=-math.inf)
    _float(kw, "diversity_penalty", low=0.0)
    if not isinstance(kw["early_stopping"], bool) and kw["early_stopping"] != "never":
        raise ChatRequestError("generate_kwargs.early_stopping", "must be true, false or 'never'")
    for key in ("output_scores", "return_dict_in_generate", "remove_invalid_values"):
        _bool(kw, key)
    num_beams = _int(kw, "num_beams", 1)
    num_beam_groups = _int(kw, "num_beam_groups", 1)
    no_repeat = _int(kw, "no_repeat_ngram_size", 0)
    encoder_no_repeat = _int(kw, "encoder_no_repeat_ngram_size", 0)
    sequences = _int(kw, "num_return_sequences", 1)
    _token_ids(kw["pad_token_id"], "pad_token_id")
    eos = _token_ids(kw["eos_token_id"], "eos_token_id")
    if num_beams > 1:
        raise _unsupported("num_beams", num_beams, "vLLM samples; it has no beam search here")
    if num_beam_groups > 1:
        raise _unsupported("num_beam_groups", num_beam_groups, "no group beam search")
    if typical_p != 1.0:
        raise _unsupported("typical_p", typical_p, "vLLM has no typical sampling")
    if no_repeat:
        raise _unsupported("no_repeat_ngram_size", no_repeat, "vLLM has no n-gram blocking")
    if encoder_no_repeat:
        raise _unsupported(
            "encoder_no_repeat_ngram_size", encoder_no_repeat, "only for encoder-decoder models"
        )
    if sequences > 1:
        raise _unsupported(
            "num_return_sequences", sequences, "/chat returns one text; use /v1/completions' n"
        )
    for key in ("forced_bos_token_id", "forced_eos_token_id"):
        if kw[key] is not None:
            raise _unsupported(key, kw[key], "vLLM cannot force tokens")
    banned: list[int] = []
    bad_words = kw["bad_words_ids"]
    if bad_words is not None:
        if not isinstance(bad_words, list) or not all(
            isinstance(w, list) and w and all(_is_int(t) and t >= 0 for t in w) for w in bad_words
        ):
            raise ChatRequestError(
                "generate_kwargs.bad_words_ids", "must be a list of lists of token ids"
            )
        for word in bad_words:
            if len(word) > 1:
                raise _unsupported(
                    "bad_words_ids", word, "only single-token words can be banned on vLLM"
                )
            banned.append(word[0])
    extra = {
        k: kw[k]
        for k in (
            "early_stopping",
            "length_penalty",
            "diversity_penalty",
            "output_scores",
            "return_dict_in_generate",
            "pad_token_id",
            "remove_invalid_values",
        )
    }
    return ChatRequest(
        prompt=prompt if messages is None else None,
        messages=messages,
        return_full_text=flags["return_full_text"],
        clean_up_tokenization_spaces=flags["clean_up_tokenization_spaces"],
        prefix=prefix or "",
        handle_long_generation="hole" if hlg == "hole" else None,
        max_length=max_length,
        min_length=min_length,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        eos_token_ids=eos,
        banned_token_ids=tuple(banned),
        extra=extra,
    )


def tokenize_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body for vLLM's ``POST /tokenize`` that counts the prompt as generation will see it."""
    if request.messages is not None:
        return {"model": model, "messages": list(request.messages), "add_generation_prompt": True}
    return {"model": model, "prompt": request.prefix + (request.prompt or "")}


@dataclass(frozen=True)
class UpstreamCall:
    """One vLLM OpenAI call: its path and JSON body."""

    path: str
    body: dict[str, Any]


def generation_call(
    request: ChatRequest, model: str, prompt_tokens: int, max_model_len: int
) -> UpstreamCall:
    """The vLLM completion for ``request`` once the prompt's token count is known.

    As transformers does: ``max_length`` counts the prompt; when prompt plus new tokens exceed
    the context, the new tokens are capped to the room left, or with ``handle_long_generation``
    "hole" the prompt's start is cut instead (vLLM's ``truncate_prompt_tokens`` keeps its end).
    """
    new_tokens = request.max_length - prompt_tokens
    if new_tokens < 1:
        raise ChatRequestError(
            "generate_kwargs.max_length",
            f"the prompt is {prompt_tokens} tokens and max_length {request.max_length} counts "
            "the prompt, which leaves no room to generate; raise max_length",
        )
    truncate: int | None = None
    if request.max_length > max_model_len:
        if request.handle_long_generation == "hole":
            truncate = max_model_len - new_tokens
            if truncate < 1:
                raise ChatRequestError(
                    "generate_kwargs.max_length",
                    f"{new_tokens} new tokens do not fit the model's context of {max_model_len} "
                    "even with handle_long_generation 'hole'; lower max_length",
                )
        else:
            new_tokens = max_model_len - prompt_tokens
            if new_tokens < 1:
                raise ChatRequestError(
                    "prompt",
                    f"is {prompt_tokens} tokens, which fills the model's context of "
                    f"{max_model_len}; shorten it, or pass handle_long_generation 'hole' to cut "
                    "its start",
                )
    sampling: dict[str, Any] = {
        "max_tokens": new_tokens,
        "min_tokens": max(0, request.min_length - prompt_tokens),
        "n": 1,
        "repetition_penalty": request.repetition_penalty,
        "skip_special_tokens": True,
    }
    if request.do_sample:
        sampling |= {
            "temperature": request.temperature,
            "top_k": request.top_k,
            "top_p": request.top_p,
        }
    else:
        sampling |= {"temperature": 0.0, "top_k": 0, "top_p": 1.0}
    if request.eos_token_ids:
        sampling["stop_token_ids"] = list(request.eos_token_ids)
    if request.banned_token_ids:
        sampling["logit_bias"] = {str(t): -100.0 for t in request.banned_token_ids}
    if truncate is not None:
        sampling["truncate_prompt_tokens"] = truncate
    if request.messages is not None:
        return UpstreamCall(
            "/v1/chat/completions",
            {"model": model, "messages": list(request.messages), **sampling},
        )
    return UpstreamCall(
        "/v1/completions",
        {"model": model, "prompt": request.prefix + (request.prompt or ""), **sampling},
    )


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop spaces before punctuation and contractions."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def chat_result(request: ChatRequest, response: Mapping[str, Any]) -> ChatResult:
    """Map vLLM's completion JSON to ``{"Result": ...}``."""
    choice = response["choices"][0]
    text = choice["message"]["content"] if request.messages is not None else choice["text"]
    text = str(text or "")
    if request.clean_up_tokenization_spaces:
        text = clean_up_tokenization(text)
    if request.messages is None and request.return_full_text:
        text = (request.prompt or "") + text
    return {"Result": text}
