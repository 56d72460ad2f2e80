"""``prefill.groups``: which admitted requests are prefilled together."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from runtime.server.prefill import CALL_TOKENS, groups

# the token counts of bench/serving_bench.py's 32 prompts on the benchmark model
BENCH_LENGTHS = [11, 13, 14, 15, 21, 23, 23, 23, 29, 32, 38, 41, 41, 42, 43, 43]
BENCH_LENGTHS += [45, 49, 51, 59, 62, 71, 75, 76, 77, 78, 78, 80, 81, 81, 87, 90]


def cost(requests: list[tuple[int, int]], split: list[list[int]], call: int) -> int:
    return sum(
        sum(requests[i][0] for i in group) * max(requests[i][1] for i in group) + call
        for group in split
    )


def test_similar_lengths_stay_together_and_a_long_prompt_goes_alone() -> None:
    assert groups([(1, 10), (1, 12), (1, 11)]) == [[0, 2, 1]]
    assert groups([(1, 2000), (1, 10), (1, 12)]) == [[1, 2], [0]]
    assert groups([]) == []
    assert groups([(3, 7)]) == [[0]]


def test_rows_weigh_a_request_by_its_n() -> None:
    # one short request with many rows is worth its own call next to a long one
    assert groups([(1, 100), (16, 10)]) == [[1], [0]]
    assert groups([(1, 100), (1, 10)], call_tokens=200) == [[1, 0]]


def test_the_bench_prompts_lose_much_less_to_padding() -> None:
    requests = [(1, n) for n in BENCH_LENGTHS]
    split = groups(requests)
    assert 1 < len(split) < len(requests)
    padded = cost(requests, split, 0)
    assert padded < 1.15 * sum(BENCH_LENGTHS)  # one group: 1.81 times
    assert len(requests) * max(BENCH_LENGTHS) > 1.8 * sum(BENCH_LENGTHS)


@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 300)), max_size=7),
    st.integers(0, 500),
)
def test_groups_partition_the_requests_at_least_cost(
    requests: list[tuple[int, int]], call: int
) -> None:
    split = groups(requests, call)
    assert sorted(i for group in split for i in group) == list(range(len(requests)))
    lengths = [requests[i][1] for group in split for i in group]
    assert lengths == sorted(lengths)  # shortest first, contiguous in length order
    # no partition of the requests into contiguous runs (by length) costs less
    order = sorted(range(len(requests)), key=lambda i: requests[i][1])
    best = cost(requests, split, call)
    for cuts in itertools.product([False, True], repeat=max(len(order) - 1, 0)):
        runs, start = [], 0
        for at, cut in enumerate(cuts, start=1):
            if cut:
                runs.append(order[start:at])
                start = at
        runs.append(order[start:])
        if order:
            assert best <= cost(requests, runs, call)
    assert CALL_TOKENS > 0
