"""Incremental detokenization with stop strings (pure; the decode function is passed in).

``TextStream`` turns a row's tokens into text deltas as they arrive. It holds back text that
could still change: a trailing partial UTF-8 character (decoded as U+FFFD) and the tail that
could be the start of a stop string. When a stop string appears, the text ends before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


class TextStream:
    """The text of one generated sequence, delivered in safe increments."""

    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.tokens: list[int] = []
        self.text = ""  # the text so far (cut at a stop string once one is found)
        self._sent = 0
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the new text that is safe to send (may be empty)."""
        if self.stopped:
            return ""
        self.tokens.append(token)
        text = self._decode(self.tokens)
        if text.endswith("\ufffd"):
            return ""  # a character split across tokens: wait for the rest
        self.text = text
        if self._stop:
            start = max(0, self._sent - self._hold)
            cut = min((i for s in self._stop if (i := text.find(s, start)) >= 0), default=-1)
            if cut >= 0:
                self.text = text[:cut]
                self.stopped = True
                return self._flush()
        safe = len(self.text) - self._hold
        if safe <= self._sent:
            return ""
        delta = self.text[self._sent : safe]
        self._sent = safe
        return delta

    def _flush(self) -> str:
        delta = self.text[self._sent :]
        self._sent = len(self.text)
        return delta

    def finish(self) -> str:
        """The generation ended: return whatever text was held back."""
        if not self.stopped and self.tokens:
            self.text = self._decode(self.tokens).rstrip("\ufffd") or self.text
        return self._flush()
