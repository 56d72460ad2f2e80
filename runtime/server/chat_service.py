"""KAITO's ``POST /chat`` without HTTP: the text-generation pipeline's semantics (prefix,
``return_full_text``, decoding), planned with ``planning.py``, generated through
``runner.Generation`` (one wake-up of the event loop per finished row)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass, field

from runtime.server.engine import Engine
from runtime.server.errors import RequestError
from runtime.server.jobs import FinishEvent, TokenEvent
from runtime.server.metrics import Metrics
from runtime.server.planning import ModelLimits, plan_chat
from runtime.server.protocol import ChatRequest, ChatResponse
from runtime.server.runner import Generation, IsDisconnected
from runtime.server.tokenizing import Tokenizing


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


__all__ = ["ChatService"]
