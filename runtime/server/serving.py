"""What the endpoints do, without HTTP: parse results in, response objects (or chunks) out.

``ChatService`` is KAITO's ``/chat`` with the text-generation pipeline's semantics (prefix,
``return_full_text``, decoding); ``OpenAIService`` is ``/v1/models``, ``/v1/completions`` and
``/v1/chat/completions``, streamed or not. Both plan with ``planning.py`` and generate through
``runner.Generation``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.server.detok import TextStream
from runtime.server.engine import Engine, FinishEvent, TokenEvent
from runtime.server.errors import ModelNotFoundError, RequestError
from runtime.server.metrics import Metrics
from runtime.server.planning import ModelLimits, OpenAISampling, Plan, plan_chat, plan_openai
from runtime.server.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Completion,
    CompletionRequest,
    ModelList,
    Usage,
)
from runtime.server.runner import Generation

IsDisconnected = Callable[[], bool]
LONG_TEXT = 20_000  # characters beyond which tokenizing runs off the event loop
MAX_PROMPTS = 64  # prompts in one /v1/completions request (a batch of texts or token lists)


class Tokenizing:
    """The tokenizer calls of the services (encoding, chat templates, decoding)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    async def encode(self, text: str, *, special: bool = True) -> list[int]:
        if len(text) > LONG_TEXT:
            return await asyncio.get_running_loop().run_in_executor(
                None, self._encode, text, special
            )
        return self._encode(text, special)

    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def render_chat(
        self, messages: Sequence[ChatMessage], *, field_name: str, pipeline_style: bool
    ) -> list[int]:
        """Apply the chat template; ``pipeline_style`` continues a final assistant message."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(
                "this model has no chat template; send a prompt instead, or start the server "
                "with --chat-template",
                field=field_name,
            )
        conversation = [
            {"role": m.role, "content": _content_text(m, f"{field_name}[{i}].content")}
            for i, m in enumerate(messages)
        ]
        continue_final = pipeline_style and messages[-1].role == "assistant"
        try:
            encoded = self.tokenizer.apply_chat_template(
                conversation,
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                tokenize=True,
            )
        except Exception as exc:  # jinja2 TemplateError and friends: the messages don't fit
            raise RequestError(
                f"the model's chat template refused these messages: {exc}", field=field_name
            ) from exc
        ids = (
            encoded["input_ids"]
            if isinstance(encoded, dict) or hasattr(encoded, "keys")
            else encoded
        )
        return [int(t) for t in ids]

    def decode(self, ids: Sequence[int], *, clean_up: bool = False) -> str:
        text: str = self.tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=clean_up
        )
        return text


def _content_text(message: ChatMessage, field_name: str) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text for part in message.content)


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    reason: str | None = None


async def _collect(generation: Generation, rows: list[list[_Row]]) -> None:
    async with aclosing(generation.events()) as events:
        async for job, batch in events:
            for event in batch:
                if isinstance(event, TokenEvent):
                    rows[job][event.index].tokens.append(event.token)
                elif isinstance(event, FinishEvent):
                    rows[job][event.index].reason = event.reason


class ChatService:
    """``POST /chat``: KAITO's transformers API."""

    def __init__(
        self, engine: Engine, tokenizing: Tokenizing, limits: ModelLimits, metrics: Metrics
    ) -> None:
        self.engine = engine
        self.tok = tokenizing
        self.limits = limits
        self.metrics = metrics

    async def chat(
        self, req: ChatRequest, is_disconnected: IsDisconnected | None = None
    ) -> ChatResponse | None:
        """Generate; ``None`` when the client went away before the end."""
        if req.prompt is not None and req.messages is not None:
            raise RequestError("give either prompt or messages, not both", field="messages")
        prefix_tokens = 0
        if req.messages is not None:
            ids = self.tok.render_chat(req.messages, field_name="messages", pipeline_style=True)
            prompt_field = "messages"
        else:
            if not req.prompt:
                raise RequestError(
                    "Text generation parameter prompt required (or messages for a chat model)",
                    field="prompt",
                )
            ids = await self.tok.encode((req.prefix or "") + req.prompt)
            if req.prefix:
                prefix_tokens = len(await self.tok.encode(req.prefix, special=False))
            prompt_field = "prompt"
        plan = plan_chat(
            req.generate_kwargs,
            ids,
            self.limits,
            prefix_tokens=prefix_tokens,
            hole=req.handle_long_generation == "hole",
            prompt_field=prompt_field,
        )
        rows = [[_Row() for _ in range(plan.n)]]
        generation = Generation(self.engine, [plan], is_disconnected, whole_rows=True)
        generation.start()
        try:
            await _collect(generation, rows)
        except asyncio.CancelledError:  # the client went away (handler cancellation)
            self.metrics.request_finished("abort")
            raise
        if generation.disconnected:
            self.metrics.request_finished("abort")
            return None
        texts = []
        for row in rows[0]:
            text = self.tok.decode(row.tokens, clean_up=req.clean_up_tokenization_spaces)
            if req.return_full_text and req.messages is None and req.prompt is not None:
                text = req.prompt + text
            texts.append(text)
        self.metrics.request_finished(rows[0][0].reason or "abort")
        response: ChatResponse = {"Result": "".join(texts)}
        if len(texts) > 1:
            response["sequences"] = texts
        return response


def _openai_sampling(
    req: CompletionRequest | ChatCompletionRequest, max_tokens: int | None
) -> OpenAISampling:
    return OpenAISampling(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        top_k=req.top_k,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        stop_token_ids=req.stop_token_ids,
    )


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


@dataclass
class _Choice:
    """One OpenAI choice being generated."""

    index: int
    stream: TextStream
    tokens: int = 0
    reason: str | None = None


class OpenAIService:
    """The OpenAI-compatible endpoints."""

    def __init__(
        self,
        engine: Engine,
        tokenizing: Tokenizing,
        limits: ModelLimits,
        metrics: Metrics,
        *,
        model_name: str,
        root: str,
    ) -> None:
        self.engine = engine
        self.tok = tokenizing
        self.limits = limits
        self.metrics = metrics
        self.model_name = model_name
        self.root = root
        self.created = int(time.time())

    def models(self) -> ModelList:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "kaito",
                    "root": self.root,
                    "max_model_len": self.limits.context_length,
                }
            ],
        }

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise ModelNotFoundError(
                f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                field="model",
            )

    # ---- completions -------------------------------------------------------------------------

    async def _completion_prompts(self, req: CompletionRequest) -> list[tuple[list[int], str]]:
        prompt = req.prompt
        batch = not isinstance(prompt, str) and not all(isinstance(p, int) for p in prompt)
        if batch and len(prompt) > MAX_PROMPTS:
            raise RequestError(
                f"lists {len(prompt)} prompts; send at most {MAX_PROMPTS} per request",
                field="prompt",
            )
        if isinstance(prompt, str):
            texts: list[str] = [prompt]
        elif all(isinstance(p, str) for p in prompt):
            texts = [str(p) for p in prompt]
        elif all(isinstance(p, int) for p in prompt):
            ids = [int(p) for p in prompt]  # type: ignore[arg-type]
            return [(self._checked_ids(ids, "prompt"), self.tok.decode(ids))]
        else:
            out = []
            for i, p in enumerate(prompt):
                if not isinstance(p, list):
                    raise RequestError("mixes token lists with other values", field="prompt")
                out.append((self._checked_ids(p, f"prompt[{i}]"), self.tok.decode(p)))
            return out
        return [(await self.tok.encode(t), t) for t in texts]

    def _checked_ids(self, ids: list[int], field_name: str) -> list[int]:
        for i, t in enumerate(ids):
            if t >= self.limits.vocab_size:
                raise RequestError(
                    f"token id {t} is outside the vocabulary (0 to {self.limits.vocab_size - 1})",
                    field=f"{field_name}[{i}]",
                )
        return ids

    async def completion(
        self, req: CompletionRequest, is_disconnected: IsDisconnected | None = None
    ) -> Completion | AsyncGenerator[dict[str, Any], None] | None:
        self._check_model(req.model)
        prompts = await self._completion_prompts(req)
        sampling = _openai_sampling(req, req.max_tokens)
        field_name = "prompt" if len(prompts) == 1 else "prompt[{}]"
        plans = [
            plan_openai(sampling, ids, self.limits, prompt_field=field_name.format(i))
            for i, (ids, _) in enumerate(prompts)
        ]
        stops = _stops(req.stop)
        choices = [
            [_Choice(i * req.n + j, TextStream(self.tok.decode, stops)) for j in range(req.n)]
            for i in range(len(plans))
        ]
        usage_prompt = sum(len(ids) for ids, _ in prompts)
        request_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        generation = Generation(
            self.engine,
            plans,
            None if req.stream else is_disconnected,
            whole_rows=not req.stream and not stops,
        )
        generation.start()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream_completion(
                generation,
                choices,
                prompts=prompts,
                echo=req.echo,
                request_id=request_id,
                created=created,
                usage_prompt=usage_prompt,
                include_usage=include_usage,
            )
        await self._run(generation, choices)
        self._count(choices, generation)
        if generation.disconnected:
            return None
        out: Completion = {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": self.model_name,
            "choices": [],
            "usage": self._usage(usage_prompt, choices),
        }
        for i, job_choices in enumerate(choices):
            for choice in job_choices:
                choice.stream.finish()
                text = choice.stream.text
                if req.echo:
                    text = prompts[i][1] + text
                out["choices"].append(
                    {
                        "index": choice.index,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": _reason(choice.reason),
                    }
                )
        return out

    async def _stream_completion(
        self,
        generation: Generation,
        choices: list[list[_Choice]],
        *,
        prompts: list[tuple[list[int], str]],
        echo: bool,
        request_id: str,
        created: int,
        usage_prompt: int,
        include_usage: bool,
    ) -> AsyncGenerator[dict[str, Any], None]:
        def chunk(index: int, text: str, reason: str | None) -> dict[str, Any]:
            return {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
                ],
            }

        if echo:
            for i, job_choices in enumerate(choices):
                for choice in job_choices:
                    yield chunk(choice.index, prompts[i][1], None)
        try:
            async with aclosing(self._deltas(generation, choices)) as deltas:
                async for index, text, reason in deltas:
                    yield chunk(index, text, reason)
        finally:
            self._count(choices, generation)
        if include_usage:
            yield {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": self.model_name,
                "choices": [],
                "usage": self._usage(usage_prompt, choices),
            }

    # ---- chat completions --------------------------------------------------------------------

    async def chat_completion(
        self, req: ChatCompletionRequest, is_disconnected: IsDisconnected | None = None
    ) -> ChatCompletion | AsyncGenerator[dict[str, Any], None] | None:
        self._check_model(req.model)
        if req.logprobs:
            raise RequestError(
                "log probabilities are not supported by this runtime", field="logprobs"
            )
        ids = self.tok.render_chat(req.messages, field_name="messages", pipeline_style=False)
        max_tokens = (
            req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        )
        plan = plan_openai(
            _openai_sampling(req, max_tokens), ids, self.limits, prompt_field="messages"
        )
        stops = _stops(req.stop)
        choices = [[_Choice(j, TextStream(self.tok.decode, stops)) for j in range(req.n)]]
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        generation = Generation(
            self.engine,
            [plan],
            None if req.stream else is_disconnected,
            whole_rows=not req.stream and not stops,
        )
        generation.start()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream_chat(
                generation,
                choices,
                plan=plan,
                request_id=request_id,
                created=created,
                include_usage=include_usage,
            )
        await self._run(generation, choices)
        self._count(choices, generation)
        if generation.disconnected:
            return None
        out: ChatCompletion = {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": self.model_name,
            "choices": [],
            "usage": self._usage(len(plan.prompt), choices),
        }
        for choice in choices[0]:
            choice.stream.finish()
            out["choices"].append(
                {
                    "index": choice.index,
                    "message": {"role": "assistant", "content": choice.stream.text},
                    "logprobs": None,
                    "finish_reason": _reason(choice.reason),
                }
            )
        return out

    async def _stream_chat(
        self,
        generation: Generation,
        choices: list[list[_Choice]],
        *,
        plan: Plan,
        request_id: str,
        created: int,
        include_usage: bool,
    ) -> AsyncGenerator[dict[str, Any], None]:
        def chunk(index: int, delta: dict[str, str], reason: str | None) -> ChatCompletionChunk:
            return {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}  # type: ignore[typeddict-item]
                ],
            }

        for choice in choices[0]:
            yield dict(chunk(choice.index, {"role": "assistant", "content": ""}, None))
        try:
            async with aclosing(self._deltas(generation, choices)) as deltas:
                async for index, text, reason in deltas:
                    yield dict(chunk(index, {"content": text} if text else {}, reason))
        finally:
            self._count(choices, generation)
        if include_usage:
            yield {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_name,
                "choices": [],
                "usage": self._usage(len(plan.prompt), choices),
            }

    # ---- shared ------------------------------------------------------------------------------

    async def _run(self, generation: Generation, choices: list[list[_Choice]]) -> None:
        try:
            async with aclosing(self._deltas(generation, choices)) as deltas:
                async for _ in deltas:
                    pass
        except asyncio.CancelledError:  # the client went away (handler cancellation)
            self.metrics.request_finished("abort")
            raise

    async def _deltas(
        self, generation: Generation, choices: list[list[_Choice]]
    ) -> AsyncGenerator[tuple[int, str, str | None], None]:
        """``(choice index, new text, finish reason or None)`` as tokens arrive."""
        async with aclosing(generation.events()) as events:
            async for job, batch in events:
                for event in batch:
                    if not isinstance(event, TokenEvent | FinishEvent):
                        continue  # errors end the generation with EngineError
                    choice = choices[job][event.index]
                    if choice.reason is not None:
                        continue  # already ended by a stop string
                    if isinstance(event, TokenEvent):
                        choice.tokens += 1
                        delta = choice.stream.push(event.token)
                        if choice.stream.stopped:
                            choice.reason = "stop"
                            yield choice.index, delta, "stop"
                            if all(c.reason for c in choices[job]):
                                generation.cancel(job)
                        elif delta:
                            yield choice.index, delta, None
                    elif isinstance(event, FinishEvent):
                        choice.reason = event.reason
                        rest = choice.stream.finish()
                        if event.reason != "abort":
                            yield choice.index, rest, _reason(event.reason)

    def _count(self, choices: list[list[_Choice]], generation: Generation) -> None:
        reason = choices[0][0].reason if choices and choices[0] else None
        if generation.disconnected or reason is None:
            reason = "abort"
        self.metrics.request_finished(reason)

    @staticmethod
    def _usage(prompt_tokens: int, choices: list[list[_Choice]]) -> Usage:
        completion = sum(c.tokens for job in choices for c in job)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }


def _reason(reason: str | None) -> Literal["stop", "length"] | None:
    if reason == "stop":
        return "stop"
    if reason == "length":
        return "length"
    return None
