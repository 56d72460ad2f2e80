"""``Generation``: per-step events for streaming consumers, one hand-off for ``/chat``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from runtime.server.engine import Engine, Event, FinishEvent, TokenEvent
from runtime.server.loader import LoadedModel
from runtime.server.planning import Plan
from runtime.server.runner import Generation
from tests.runtime.test_engine import PROMPTS, encode, greedy, make_engine

NEW_TOKENS = 6


@pytest.fixture
def engine(loaded_tiny: LoadedModel) -> Iterator[Engine]:
    eng = make_engine(loaded_tiny)
    eng.start()
    yield eng
    eng.shutdown()


async def batches(engine: Engine, plan: Plan, incremental: bool) -> list[list[Event]]:
    generation = Generation(engine, [plan], incremental=incremental)
    generation.start()
    return [events async for _, events in generation.events()]


def tokens_of(seen: list[list[Event]], rows: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(rows)]
    for events in seen:
        for event in events:
            if isinstance(event, TokenEvent):
                out[event.index].append(event.token)
    return out


def test_whole_result_consumers_get_one_batch_with_the_same_events(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    params = greedy(NEW_TOKENS, loaded_tiny.limits.eos_token_ids, min_new_tokens=NEW_TOKENS)
    plan = Plan(tuple(encode(loaded_tiny, PROMPTS[1])), params, 2)

    per_step = asyncio.run(batches(engine, plan, incremental=True))
    whole = asyncio.run(batches(engine, plan, incremental=False))

    assert len(per_step) == NEW_TOKENS  # one hand-off per decode step
    assert len(whole) == 1  # both rows finish at the same step: one hand-off in all
    assert tokens_of(whole, 2) == tokens_of(per_step, 2)
    assert all(len(row) == NEW_TOKENS for row in tokens_of(whole, 2))
    finishes = [e for e in whole[0] if isinstance(e, FinishEvent)]
    assert sorted((e.index, e.reason) for e in finishes) == [(0, "length"), (1, "length")]
