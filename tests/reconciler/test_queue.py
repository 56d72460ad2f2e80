"""The work queue: one worker per key, deduplication, requeue-after, backoff."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.queue import Backoff, QueueShutDown, WorkQueue
from tests.reconciler.aio import sync


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@sync
async def test_a_key_waits_once_and_comes_back_when_added_during_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    first = await q.get()
    assert first == "a"
    q.add("a")  # while "a" is processed: dirty, not ready
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    q.done("b")
    assert len(q) == 0


@sync
async def test_add_after_uses_the_earliest_time_and_add_supersedes_it() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add_after("x", 10)
    q.add_after("x", 5)
    q.add_after("x", 20)
    assert q.scheduled_in("x") == 5
    q.add_after("y", 1)
    clock.now += 1
    assert await q.get() == "y"
    q.done("y")
    q.add("x")  # now: the schedule is dropped
    assert q.scheduled_in("x") is None
    assert await q.get() == "x"
    q.done("x")
    clock.now += 100
    assert len(q) == 0
    assert q.waiting == 0


@sync
async def test_get_waits_for_a_scheduled_key_without_busy_looping() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("later", 0.05)
    key = await asyncio.wait_for(q.get(), 5)
    assert key == "later"


@sync
async def test_many_workers_never_share_a_key() -> None:
    q: WorkQueue[int] = WorkQueue()
    active: set[int] = set()
    seen: list[int] = []
    enough = asyncio.Event()

    async def worker() -> None:
        while True:
            try:
                k = await q.get()
            except QueueShutDown:
                return
            assert k not in active
            active.add(k)
            await asyncio.sleep(0)
            if len(seen) < 50:
                q.add(k % 3)
            seen.append(k)
            if len(seen) >= 50:
                enough.set()
            active.discard(k)
            q.done(k)

    for i in range(6):
        q.add(i)
    tasks = [asyncio.ensure_future(worker()) for _ in range(4)]
    await asyncio.wait_for(enough.wait(), 10)
    q.shutdown()
    await asyncio.gather(*tasks)
    assert set(range(6)) <= set(seen)


@sync
async def test_shutdown_wakes_waiting_getters() -> None:
    q: WorkQueue[str] = WorkQueue()
    task = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.01)
    q.shutdown()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(task, 5)


def test_backoff_doubles_up_to_the_cap_and_forgets_on_success() -> None:
    b: Backoff[str] = Backoff(base=0.5, maximum=3)
    assert [b.next_delay("k") for _ in range(5)] == [0.5, 1, 2, 3, 3]
    assert b.next_delay("other") == 0.5
    b.forget("k")
    assert b.next_delay("k") == 0.5
