"""``Generation``: the engine's events on the event loop, per token or per finished row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.server.engine import Engine
from runtime.server.jobs import Event, FinishEvent, TokenEvent
from runtime.server.loader import LoadedModel
from runtime.server.planning import Plan
from runtime.server.runner import Generation
from runtime.server.sampling import SamplingParams
from tests.runtime.test_engine import encode, make_engine


@pytest.fixture
def engine(loaded_tiny: LoadedModel) -> Iterator[Engine]:
    eng = make_engine(loaded_tiny)
    eng.start()
    yield eng
    eng.shutdown()


def plan(loaded: LoadedModel, text: str, tokens: int, n: int = 1) -> Plan:
    params = SamplingParams(
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        eos_token_ids=tuple(loaded.limits.eos_token_ids),
    )
    return Plan(prompt=tuple(encode(loaded, text)), params=params, n=n)


async def deliveries(generation: Generation) -> list[list[Event]]:
    generation.start()
    out = []
    async for _, events in generation.events():
        out.append(events)
    return out


def tokens_of(batches: list[list[Event]], rows: int) -> list[list[int]]:
    tokens: list[list[int]] = [[] for _ in range(rows)]
    for batch in batches:
        for event in batch:
            if isinstance(event, TokenEvent):
                tokens[event.index].append(event.token)
    return tokens


def test_whole_rows_wakes_the_loop_once_per_row_with_the_same_tokens(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    plans = [plan(loaded_tiny, "The", 12, n=2), plan(loaded_tiny, "adapters", 7)]

    async def run(whole: bool) -> list[list[list[Event]]]:
        return [await deliveries(Generation(engine, [p], whole_rows=whole)) for p in plans]

    per_token = asyncio.run(run(False))
    whole = asyncio.run(run(True))
    assert [len(b) for b in per_token] == [12, 7]  # one delivery per step
    assert [len(b) for b in whole] == [1, 1]  # both rows of the first job end at the same step
    for p, token_batches, row_batches in zip(plans, per_token, whole, strict=True):
        assert tokens_of(row_batches, p.n) == tokens_of(token_batches, p.n)
        finishes = [e for batch in row_batches for e in batch if isinstance(e, FinishEvent)]
        assert sorted(e.index for e in finishes) == list(range(p.n))
        assert {e.reason for e in finishes} == {"length"}
        assert all(len(t) == p.params.max_new_tokens for t in tokens_of(row_batches, p.n))


def test_whole_rows_delivers_the_held_tokens_with_an_abort(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    """A cancelled job's rows end with ``abort``; the tokens held until then come with it."""

    async def run() -> list[Any]:
        generation = Generation(engine, [plan(loaded_tiny, "The", 400)], whole_rows=True)
        generation.start()
        for _ in range(24_000):  # at most 2 minutes
            if generation._jobs[0].generated:  # running, with tokens held
                break
            await asyncio.sleep(0.005)
        else:
            pytest.fail("the job never started")
        generation.cancel(0)
        return [events async for _, events in generation.events()]

    batches = asyncio.run(run())
    assert len(batches) == 1
    (events,) = batches
    assert isinstance(events[-1], FinishEvent)
    assert events[-1].reason == "abort"
    assert 0 < sum(isinstance(e, TokenEvent) for e in events) < 400
