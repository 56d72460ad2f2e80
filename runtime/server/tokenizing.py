"""The tokenizer calls of the services: encoding (long texts off the event loop), chat
templates with clear refusals, decoding."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from runtime.server.errors import RequestError
from runtime.server.protocol import ChatMessage

LONG_TEXT = 20_000  # characters beyond which tokenizing runs off the event loop


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


__all__ = ["LONG_TEXT", "Tokenizing"]
