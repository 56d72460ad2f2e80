"""The seed's ``POST /chat`` on vLLM, with the transformers runtime's own validation and planning.

The body is parsed by the transformers runtime's ``Parser(ChatRequest)`` (one wire type, one
schema, the same 400 messages) and planned by its ``plan_chat`` (``max_length`` counts the prompt,
``prefix`` is not counted, ``handle_long_generation: "hole"`` cuts the prompt's start, everything
capped by the context). The prompt is tokenized by vLLM (``/tokenize``, the served tokenizer and
chat template), and the planned token ids go to vLLM's ``/v1/completions``, so vLLM generates
exactly the continuation the plan describes.

What vLLM cannot do is refused with a 400 that names the key (the transformers runtime serves
them): beam search (``num_beams`` > 1), ``typical_p`` < 1, ``no_repeat_ngram_size`` and
``encoder_no_repeat_ngram_size`` > 0, ``forced_bos_token_id`` / ``forced_eos_token_id``, and
``bad_words_ids`` with words longer than one token (single tokens get a ``logit_bias`` of -100,
OpenAI's ban). ``eos_token_id`` replaces the model's end tokens (``ignore_eos`` plus
``stop_token_ids``), as in ``generate``. ``pad_token_id``, ``output_scores``,
``return_dict_in_generate`` and ``remove_invalid_values`` do not change the text, and neither does
``clean_up_tokenization_spaces``: transformers 5 ignores it for BPE tokenizers, which every preset
uses. vLLM detokenizes incrementally, so a generation that ends inside a multi-byte character
lacks the trailing U+FFFD a one-shot ``decode`` would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.server.errors import RequestError
from runtime.server.planning import ModelLimits, Plan, plan_chat
from runtime.server.protocol import ChatMessage, ChatRequest, ChatResponse, GenerateKwargs
from runtime.server.sampling import SamplingParams

UNBOUNDED_VOCAB = 2**31 - 1
"""Used when the vocabulary size is unknown: vLLM then checks token ids itself."""


def _unsupported(key: str, value: Any, why: str) -> RequestError:
    return RequestError(
        f"{value!r} is not supported by the vLLM runtime ({why}); leave it at its default or use "
        "the transformers runtime (annotation kaito.sh/runtime: transformers)",
        field=f"generate_kwargs.{key}",
    )


def check_request(req: ChatRequest) -> None:
    """What the shared schema accepts but this runtime cannot do, or a missing prompt."""
    if req.prompt is not None and req.messages is not None:
        raise RequestError("give either prompt or messages, not both", field="messages")
    if req.messages is None and not req.prompt:
        raise RequestError(
            "Text generation parameter prompt required (or messages for a chat model)",
            field="prompt",
        )
    gk = req.generate_kwargs or GenerateKwargs()
    if gk.num_beams > 1:
        raise _unsupported("num_beams", gk.num_beams, "vLLM has no beam search here")
    if gk.do_sample and gk.typical_p < 1.0:
        raise _unsupported("typical_p", gk.typical_p, "vLLM has no typical sampling")
    if gk.no_repeat_ngram_size:
        raise _unsupported("no_repeat_ngram_size", gk.no_repeat_ngram_size, "no n-gram blocking")
    if gk.encoder_no_repeat_ngram_size:
        raise _unsupported(
            "encoder_no_repeat_ngram_size", gk.encoder_no_repeat_ngram_size, "no n-gram blocking"
        )
    for key in ("forced_bos_token_id", "forced_eos_token_id"):
        if getattr(gk, key) is not None:
            raise _unsupported(key, getattr(gk, key), "vLLM cannot force tokens")
    for word in gk.bad_words_ids or []:
        if isinstance(word, list) and len(word) > 1:
            raise _unsupported("bad_words_ids", word, "vLLM bans single tokens only")


def _message(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        content = "\n".join(part.text for part in content)
    out: dict[str, Any] = {"role": message.role, "content": content or ""}
    if message.name is not None:
        out["name"] = message.name
    return out


def tokenize_bodies(req: ChatRequest, model: str) -> list[dict[str, Any]]:
    """vLLM ``/tokenize`` bodies: the prompt as generation sees it, then the prefix alone."""
    if req.messages is not None:
        continue_final = req.messages[-1].role == "assistant"
        return [
            {
                "model": model,
                "messages": [_message(m) for m in req.messages],
                "add_generation_prompt": not continue_final,
                "continue_final_message": continue_final,
            }
        ]
    bodies: list[dict[str, Any]] = [
        {"model": model, "prompt": (req.prefix or "") + (req.prompt or "")}
    ]
    if req.prefix:
        bodies.append({"model": model, "prompt": req.prefix, "add_special_tokens": False})
    return bodies


def plan(
    req: ChatRequest,
    tokens: Sequence[int],
    *,
    prefix_tokens: int,
    max_model_len: int,
    vocab_size: int | None,
    max_n: int,
) -> Plan:
    """The transformers runtime's plan for this request and prompt."""
    limits = ModelLimits(
        vocab_size=vocab_size or UNBOUNDED_VOCAB,
        context_length=max_model_len,
        eos_token_ids=(),
        pad_token_id=0,
        max_n=max_n,
    )
    return plan_chat(
        req.generate_kwargs,
        tokens,
        limits,
        prefix_tokens=prefix_tokens,
        hole=req.handle_long_generation == "hole",
        prompt_field="messages" if req.messages is not None else "prompt",
    )


@dataclass(frozen=True)
class UpstreamCall:
    """One vLLM OpenAI call: its path and JSON body."""

    path: str
    body: dict[str, Any]


def completion_call(req: ChatRequest, planned: Plan, model: str) -> UpstreamCall:
    """vLLM ``/v1/completions`` for the planned token ids and sampling parameters."""
    params = planned.params
    assert isinstance(params, SamplingParams)  # beam search was refused by check_request
    gk = req.generate_kwargs or GenerateKwargs()
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(planned.prompt),
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,
        "n": planned.n,
        "repetition_penalty": params.repetition_penalty,
    }
    if params.do_sample:
        body |= {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p}
    else:
        body |= {"temperature": 0.0, "top_k": 0, "top_p": 1.0}
    if params.seed is not None:
        body["seed"] = params.seed
    if gk.eos_token_id is not None:
        body["ignore_eos"] = True
        body["stop_token_ids"] = list(params.eos_token_ids)
    if params.bad_words_ids:
        body["logit_bias"] = {str(word[0]): -100.0 for word in params.bad_words_ids}
    return UpstreamCall("/v1/completions", body)


def chat_response(req: ChatRequest, completion: Mapping[str, Any]) -> ChatResponse:
    """``{"Result": ...}`` from vLLM's completion, as the transformers runtime answers."""
    choices = sorted(completion["choices"], key=lambda c: int(c.get("index", 0)))
    texts = []
    for choice in choices:
        text = str(choice.get("text") or "")
        if req.return_full_text and req.messages is None and req.prompt is not None:
            text = req.prompt + text
        texts.append(text)
    response: ChatResponse = {"Result": "".join(texts)}
    if len(texts) > 1:
        response["sequences"] = texts
    return response
