"""A KV cache layer that grows in steps instead of copying itself at every decode step.

``transformers``' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``: the
layer's whole cache is copied, every layer, every step, so a row's generation costs O(length²)
in copies. ``GrowingLayer`` keeps its keys and values as views of the first columns of larger
buffers and writes each step into the spare columns; only when they run out (or when the engine
has replaced the tensors: merging newcomers, dropping finished rows, trimming padding) does it
copy into a fresh buffer with ``HEADROOM`` spare columns. Attention reads the same values through
a view (SDPA takes strided keys and values without a copy), so the tokens are identical.

The engine turns a prefilled ``DynamicCache`` of plain ``DynamicLayer``s into ``GrowingLayer``s
on the CPU (``bench/README.md`` measures it); other caches and devices are left as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

HEADROOM = 64  # spare columns per row and layer after a copy: at most one copy per 64 steps


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """``DynamicLayer`` whose ``keys`` and ``values`` are views of buffers with spare columns."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.get_seq_length() == 0:
            return super().update(key_states, value_states, *args, **kwargs)
        cached_keys, cached_values = self.keys, self.values
        assert cached_keys is not None
        assert cached_values is not None
        length, new = cached_keys.shape[-2], key_states.shape[-2]
        keys, values = self._key_buffer, self._value_buffer
        if not (
            keys is not None
            and values is not None
            and _has_room(cached_keys, keys, new)
            and _has_room(cached_values, values, new)
        ):
            keys = self._key_buffer = _with_room(cached_keys, length + new + HEADROOM)
            values = self._value_buffer = _with_room(cached_values, length + new + HEADROOM)
        keys[:, :, length : length + new] = key_states
        values[:, :, length : length + new] = value_states
        self.keys = keys[:, :, : length + new]
        self.values = values[:, :, : length + new]
        return self.keys, self.values


def _has_room(view: torch.Tensor, buffer: torch.Tensor, new: int) -> bool:
    """Whether ``view`` is still the leading columns of ``buffer`` with ``new`` columns to spare
    (the engine may have replaced the tensor since the last step)."""
    return (
        view.data_ptr() == buffer.data_ptr()
        and view.stride() == buffer.stride()
        and view.shape[:2] == buffer.shape[:2]
        and view.shape[3:] == buffer.shape[3:]
        and view.shape[2] + new <= buffer.shape[2]
    )


def _with_room(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """A [B, H, ``columns``, D] buffer whose first columns hold ``tensor``."""
    shape = list(tensor.shape)
    shape[2] = columns
    buffer = tensor.new_empty(shape)
    buffer[:, :, : tensor.shape[2]] = tensor
    return buffer


def grow_in_steps(cache: Any) -> bool:
    """Replace a cache's plain ``DynamicLayer``s by ``GrowingLayer``s (same tensors); whether
    every layer is now one (a cache of other layer types is left as it is)."""
    layers = list(getattr(cache, "layers", None) or [])
    if not layers or not all(type(layer) in (DynamicLayer, GrowingLayer) for layer in layers):
        return False
    for index, layer in enumerate(layers):
        if type(layer) is GrowingLayer:
            continue
        grown = GrowingLayer()  # type: ignore[no-untyped-call]
        grown.__dict__.update(layer.__dict__)
        cache.layers[index] = grown
    return True


__all__ = ["HEADROOM", "GrowingLayer", "grow_in_steps"]
