"""The OpenAI endpoints without HTTP: parse results in, response objects (or chunks) out.

``OpenAIService`` is ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``, streamed
or not, planned with ``planning.py`` and generated through ``runner.Generation``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from runtime.server.detok import TextStream
from runtime.server.engine import Engine
from runtime.server.errors import ModelNotFoundError, RequestError
from runtime.server.jobs import FinishEvent, TokenEvent
from runtime.server.metrics import Metrics
from runtime.server.planning import ModelLimits, OpenAISampling, Plan, plan_openai
from runtime.server.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
    Usage,
)
from runtime.server.runner import Generation, IsDisconnected
from runtime.server.tokenizing import Tokenizing

MAX_PROMPTS = 64  # prompts in one /v1/completions request (a batch of texts or token lists)


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
        generation = self._start(plans, stream=req.stream, stops=stops, watch=is_disconnected)
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
        generation = self._start([plan], stream=req.stream, stops=stops, watch=is_disconnected)
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

    def _start(
        self,
        plans: list[Plan],
        *,
        stream: bool,
        stops: list[str],
        watch: IsDisconnected | None,
    ) -> Generation:
        """Submit the plans. A stream notices a disconnect by its failed writes, an answer by
        polling ``watch``; an answer without stop strings needs only each row's end."""
        generation = Generation(
            self.engine, plans, None if stream else watch, whole_rows=not stream and not stops
        )
        generation.start()
        return generation

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
