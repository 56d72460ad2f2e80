"""A work queue of keys for the loop, in the manner of client-go's workqueue.

* A key is processed by one worker at a time; adding a key that is being processed marks it
  dirty, and it comes back once ``done`` is called.
* A key waits at most once: adding it again while queued is a no-op.
* ``add_after`` schedules a key (requeue-after); the earliest time wins; ``add`` supersedes it.
* ``Backoff`` gives per-key exponential delays after failures and forgets them on success.

Waiting is done by ``get()`` on an event with a timeout, never by sleeping per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """``get()`` was called on (or woken by) a queue that is shutting down."""


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._shutdown = False

    # -------------------------------------------------------------- producers (sync)

    def add(self, key: K) -> None:
        """Queue ``key`` now (cancels a scheduled ``add_after``)."""
        self._waiting.pop(key, None)
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._notify()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier schedule for it wins)."""
        if delay <= 0:
            self.add(key)
            return
        if self._shutdown:
            return
        due = self._clock() + delay
        current = self._waiting.get(key)
        if current is not None and current <= due:
            return
        self._waiting[key] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, key))
        self._notify()

    def done(self, key: K) -> None:
        """The worker finished ``key``; a key added meanwhile becomes ready again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutdown:
            self._ready.append(key)
            self._notify()

    def shutdown(self) -> None:
        self._shutdown = True
        self._notify()

    def _notify(self) -> None:
        self._wakeup.set()

    # -------------------------------------------------------------- introspection

    def __len__(self) -> int:
        """Keys ready to be processed (the queue depth)."""
        return len(self._ready)

    @property
    def waiting(self) -> int:
        """Keys scheduled for later."""
        return len(self._waiting)

    def scheduled_in(self, key: K) -> float | None:
        """Seconds until ``key`` is due, if it is scheduled."""
        due = self._waiting.get(key)
        return None if due is None else max(0.0, due - self._clock())

    # -------------------------------------------------------------- consumer

    def _promote_due(self) -> float | None:
        """Move due keys to ready; return seconds until the next one is due."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._waiting.get(key) != due:  # superseded or cancelled
                heapq.heappop(self._heap)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._waiting[key]
            self.add(key)
        return None

    def _take(self) -> K | None:
        while self._ready:
            key = self._ready.popleft()
            if key in self._processing:  # pragma: no cover - guarded by add/done
                continue
            self._dirty.discard(key)
            self._processing.add(key)
            return key
        return None

    async def get(self) -> K:
        """The next ready key; waits for one (or for a scheduled key to fall due)."""
        while True:
            if self._shutdown:
                raise QueueShutDown
            timeout = self._promote_due()
            key = self._take()
            if key is not None:
                return key
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)


@dataclass
class Backoff(Generic[K]):
    """Per-key exponential backoff: base, 2·base, 4·base, ... capped at ``maximum``."""

    base: float = 1.0
    maximum: float = 300.0
    failures: dict[K, int] = field(default_factory=dict)

    def next_delay(self, key: K) -> float:
        """Record a failure of ``key`` and return how long to wait before retrying it."""
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        return float(min(self.maximum, self.base * (2**n)))

    def forget(self, key: K) -> None:
        self.failures.pop(key, None)

    def count(self, key: K) -> int:
        return self.failures.get(key, 0)
