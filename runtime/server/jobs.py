"""What the batching engine takes and gives back: jobs, their events, and what it reports.

A ``Job`` is one submitted request (``n`` rows from one prompt); the engine calls its ``sink``
with lists of ``Event``s on its own thread. An ``EngineObserver`` (the metrics) hears about the
queue, admissions, first tokens, steps and finished requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from runtime.server.sampling import BeamParams, SamplingParams


@dataclass(frozen=True)
class TokenEvent:
    """Row ``index`` of a request produced ``token``."""

    index: int
    token: int


@dataclass(frozen=True)
class FinishEvent:
    """Row ``index`` is done: ``reason`` is ``stop`` (EOS), ``length`` or ``abort``."""

    index: int
    reason: str


@dataclass(frozen=True)
class ErrorEvent:
    """Generation failed for the whole request."""

    message: str


Event = TokenEvent | FinishEvent | ErrorEvent
Sink = Callable[[list[Event]], None]


class EngineObserver(Protocol):
    """What the engine reports (the metrics implement it)."""

    def queue_changed(self, waiting: int, running: int) -> None: ...

    def request_admitted(self, queued_seconds: float, prompt_tokens: int) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def step_done(self, rows: int, new_tokens: int, seconds: float) -> None: ...

    def request_done(self, seconds: float, generated_tokens: int) -> None: ...


class NullObserver:
    def queue_changed(self, waiting: int, running: int) -> None:
        pass

    def request_admitted(self, queued_seconds: float, prompt_tokens: int) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def step_done(self, rows: int, new_tokens: int, seconds: float) -> None:
        pass

    def request_done(self, seconds: float, generated_tokens: int) -> None:
        pass


@dataclass(eq=False)
class Job:
    """One submitted request: ``n`` rows generated from the same prompt."""

    id: int
    prompt: tuple[int, ...]
    params: SamplingParams | BeamParams
    n: int
    sink: Sink
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    first_token_at: float | None = None
    open_rows: int = 0
    generated: int = 0

    @property
    def rows(self) -> int:
        """Rows of the batch this job occupies."""
        return self.n if isinstance(self.params, SamplingParams) else 0


__all__ = [
    "EngineObserver",
    "ErrorEvent",
    "Event",
    "FinishEvent",
    "Job",
    "NullObserver",
    "Sink",
    "TokenEvent",
]
