"""Batched logits helpers against torch's and ``generate``'s own choices."""

from __future__ import annotations

import pytest
import torch

from runtime.server.logits import greedy_tokens


@pytest.mark.parametrize("vocab", [2, 7, 513, 32000])
def test_greedy_tokens_pick_argmaxs_index_on_ties_nan_and_inf(vocab: int) -> None:
    generator = torch.Generator().manual_seed(vocab)
    for trial in range(50):
        scores = torch.randint(0, 4, (8, vocab), generator=generator).float()  # many ties
        if trial % 3 == 0:
            scores[:, ::3] = float("-inf")
        if trial % 5 == 0:
            scores[1, vocab // 2] = float("nan")
        if trial % 7 == 0:
            scores[2] = float("-inf")
        assert torch.equal(greedy_tokens(scores), scores.argmax(dim=-1))
