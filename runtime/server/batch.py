"""The running batch of the engine: its rows and the tensors they share, and how rows join
and leave it (left-padded merges, row selection, trimming columns no row uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from runtime.server.jobs import Job
from runtime.server.logits import BatchSampler
from runtime.server.sampling import SamplingParams


@dataclass(eq=False)
class Row:
    """One generated sequence: row ``index`` of ``job``, with its own processors and noise."""

    job: Job
    index: int
    params: SamplingParams
    prompt: tuple[int, ...]
    generated: list[int]
    pre: list[Any]
    post: list[Any]
    generator: torch.Generator | None

    def history(self) -> list[int]:
        return [*self.prompt, *self.generated]


@dataclass(eq=False)
class Batch:
    """Rows decoded together, and the tensors they share (row ``i`` is index ``i`` of each)."""

    rows: list[Row]
    cache: Any  # transformers Cache
    mask: torch.Tensor  # [B, L] long: 1 where the cache holds a real token
    positions: torch.Tensor  # [B] long: position id of the next input token
    next_tokens: torch.Tensor  # [B] long: last chosen token, not yet in the cache
    sampler: BatchSampler


def row_done(row: Row) -> bool:
    """Whether a row ended: its last token is one of its EOS ids, or it has all its tokens."""
    if not row.generated:
        return False
    last = row.generated[-1]
    if last in row.params.eos_token_ids:
        return True
    return len(row.generated) >= row.params.max_new_tokens


def append(old: Batch, new: Batch) -> None:
    """Add ``new``'s rows to ``old`` (left-padding the narrower cache and mask); ``old``'s
    sampler is left to the caller to rebuild."""
    width = max(old.mask.shape[1], new.mask.shape[1])

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for old_layer, new_layer in zip(old.cache.layers, new.cache.layers, strict=True):
        old_layer.keys = torch.cat([pad(old_layer.keys, 2), pad(new_layer.keys, 2)], dim=0)
        old_layer.values = torch.cat([pad(old_layer.values, 2), pad(new_layer.values, 2)], dim=0)
    old.mask = torch.cat([pad(old.mask, 1), pad(new.mask, 1)], dim=0)
    old.positions = torch.cat([old.positions, new.positions])
    old.next_tokens = torch.cat([old.next_tokens, new.next_tokens])
    old.rows = old.rows + new.rows


def select(batch: Batch, keep: list[int]) -> None:
    """Keep only the rows at ``keep`` (cache, mask, positions, tokens, rows)."""
    index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    batch.cache.batch_select_indices(index)
    batch.mask = batch.mask[index]
    batch.positions = batch.positions[index]
    batch.next_tokens = batch.next_tokens[index]
    batch.rows = [batch.rows[i] for i in keep]


def trim(batch: Batch) -> None:
    """Drop leading cache columns that no row uses any more."""
    used = batch.mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else batch.mask.shape[1]
    if start == 0:
        return
    for layer in batch.cache.layers:
        layer.keys = layer.keys[:, :, start:]
        layer.values = layer.values[:, :, start:]
    batch.mask = batch.mask[:, start:]


__all__ = ["Batch", "Row", "append", "row_done", "select", "trim"]
