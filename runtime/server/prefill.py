"""Which newly admitted requests are prefilled together (a pure decision of the engine's).

A prefill runs its prompts as one left-padded batch: every row costs as much as the longest
prompt in it. Prompts of very different lengths waste most of that work on padding (measured on
the benchmark's 32 prompts of 11 to 90 tokens: 46% of the prefilled tokens were padding).
``groups`` sorts the requests by prompt length and splits them where padding would cost more
than another forward call; each group is prefilled on its own and merged into the running batch.
The engine groups on the CPU, where it was measured (``bench/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

# What one more forward call costs, in prompt tokens of work: the per-call overhead (Python
# through the layers, sampling the first tokens, merging into the batch) measured on the CPU
# benchmark model is a few milliseconds, about as much as 30-60 prefilled tokens.
CALL_TOKENS = 48


def groups(requests: Sequence[tuple[int, int]], call_tokens: int = CALL_TOKENS) -> list[list[int]]:
    """Split ``requests`` (``(rows, prompt length)`` each) into prefill groups, as lists of their
    indices, shortest prompts first, minimising padded tokens plus ``call_tokens`` per group."""
    order = sorted(range(len(requests)), key=lambda i: requests[i][1])
    count = len(order)
    # best[j]: least cost of the first j requests in length order; cut[j]: where its last
    # group starts. A group [i, j) costs its rows times its longest prompt, plus one call.
    best = [0] + [0] * count
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        longest = requests[order[j - 1]][1]
        rows = 0
        choice, cost = 0, -1
        for i in range(j - 1, -1, -1):
            rows += requests[order[i]][0]
            total = best[i] + rows * longest + call_tokens
            if cost < 0 or total <= cost:  # ties: the larger group, fewer calls
                choice, cost = i, total
        best[j], cut[j] = cost, choice
    out: list[list[int]] = []
    j = count
    while j > 0:
        out.append(order[cut[j] : j])
        j = cut[j]
    return out[::-1]


__all__ = ["CALL_TOKENS", "groups"]
