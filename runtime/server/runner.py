"""The bridge between the asyncio server and the engine thread.

``Generation`` submits one or more planned jobs and yields their events on the event loop. When
the consumer stops early (a client disconnects, a stop string is found, an error), the
unfinished jobs are cancelled so that their rows leave the batch at the next step.

A consumer that only needs the end of each row (a non-streaming answer without stop strings)
asks for ``whole_rows``: the engine thread then keeps a job's tokens until a row finishes and
wakes the event loop once per row instead of once per token. Under load that is most of the
event loop's work and of its contention with the engine thread for the GIL (``bench/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence

from runtime.server.engine import Engine
from runtime.server.errors import EngineError
from runtime.server.jobs import ErrorEvent, Event, FinishEvent, Job, TokenEvent
from runtime.server.planning import Plan

DISCONNECT_POLL_SECONDS = 0.5
IsDisconnected = Callable[[], bool]  # whether the client has gone away


class Generation:
    """Events of several jobs, tagged with the job's position in ``plans``."""

    def __init__(
        self,
        engine: Engine,
        plans: Sequence[Plan],
        is_disconnected: IsDisconnected | None = None,
        *,
        whole_rows: bool = False,
    ) -> None:
        self._engine = engine
        self._whole_rows = whole_rows
        self._plans = list(plans)
        self._is_disconnected = is_disconnected
        self._queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()
        self._jobs: list[Job] = []
        self._open = [plan.n for plan in self._plans]
        self.disconnected = False

    def start(self) -> None:
        """Submit every job (raises ``OverloadedError`` and cancels the others when full)."""
        loop = asyncio.get_running_loop()
        try:
            for index, plan in enumerate(self._plans):
                self._jobs.append(
                    self._engine.submit(plan.prompt, plan.params, plan.n, self._sink(loop, index))
                )
        except BaseException:
            self.cancel_all()
            raise

    def _sink(self, loop: asyncio.AbstractEventLoop, index: int) -> Callable[[list[Event]], None]:
        def deliver(events: list[Event]) -> None:
            # A closed loop (RuntimeError) means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._queue.put_nowait, (index, events))

        if not self._whole_rows:
            return deliver
        held: list[Event] = []  # only the engine thread that runs the job touches it

        def hold_tokens(events: list[Event]) -> None:
            held.extend(events)
            if not all(isinstance(event, TokenEvent) for event in events):
                ready = held.copy()
                held.clear()
                deliver(ready)

        return hold_tokens

    def cancel(self, index: int) -> None:
        """Stop job ``index`` (its remaining rows end with ``abort``)."""
        if index < len(self._jobs) and self._open[index] > 0:
            self._engine.cancel(self._jobs[index])

    def cancel_all(self) -> None:
        for index in range(len(self._jobs)):
            self.cancel(index)

    async def events(self) -> AsyncGenerator[tuple[int, list[Event]], None]:
        """Yield ``(job index, events)`` until every row of every job has finished."""
        watcher = None
        if self._is_disconnected is not None:
            watcher = asyncio.create_task(self._watch(self._is_disconnected))
        try:
            while any(self._open):
                index, events = await self._queue.get()
                if index < 0:
                    self.disconnected = True
                    return
                for event in events:
                    if isinstance(event, FinishEvent):
                        self._open[index] -= 1
                    elif isinstance(event, ErrorEvent):
                        self._open[index] = 0
                        raise EngineError(event.message)
                yield index, events
        finally:
            if watcher is not None:
                watcher.cancel()
            self.cancel_all()

    async def _watch(self, is_disconnected: Callable[[], bool]) -> None:
        """Wake ``events`` with a sentinel when the client has gone away."""
        while True:
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)
            if is_disconnected():
                self._queue.put_nowait((-1, []))
                return
