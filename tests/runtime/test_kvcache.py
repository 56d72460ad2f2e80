"""``GrowingLayer`` holds what ``DynamicLayer`` holds, without copying at every step."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from runtime.server.kvcache import HEADROOM, GrowingLayer, grow_in_steps


def states(generator: torch.Generator, rows: int, columns: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(rows, 2, columns, 4, generator=generator) for _ in range(2))


def test_growing_layer_matches_dynamic_layer_through_the_engines_edits() -> None:
    """Prefill, many steps (several regrowths), and the engine's own edits in between: rows
    dropped (``batch_select_indices``), leading columns trimmed, a padded merge (``cat``)."""
    generator = torch.Generator().manual_seed(0)
    plain, grown = DynamicLayer(), GrowingLayer()
    prefill = states(generator, 3, 7)
    for layer in (plain, grown):
        layer.update(*prefill)
    for step in range(3 * HEADROOM + 5):
        if step == 40:  # a row finished
            for layer in (plain, grown):
                layer.batch_select_indices(torch.tensor([0, 2]))
        if step == 90:  # the engine trims columns no row uses any more
            for layer in (plain, grown):
                assert layer.keys is not None
                assert layer.values is not None
                layer.keys, layer.values = layer.keys[:, :, 3:], layer.values[:, :, 3:]
        if step == 120:  # newcomers merged, left-padded to the running width
            assert plain.keys is not None
            width = plain.keys.shape[2]
            fresh = [torch.randn(1, 2, width, 4, generator=generator) for _ in range(2)]
            for layer in (plain, grown):
                assert layer.keys is not None
                assert layer.values is not None
                layer.keys = torch.cat([layer.keys, fresh[0]])
                layer.values = torch.cat([layer.values, fresh[1]])
        assert plain.keys is not None
        new = states(generator, plain.keys.shape[0], 1)
        expected = plain.update(*new)
        got = grown.update(*new)
        for want, have in zip(expected, got, strict=True):
            assert torch.equal(want, have)
        assert grown.get_seq_length() == plain.get_seq_length()


def test_growing_layer_writes_in_place_until_the_headroom_is_used() -> None:
    generator = torch.Generator().manual_seed(1)
    layer = GrowingLayer()
    layer.update(*states(generator, 2, 5))
    layer.update(*states(generator, 2, 1))  # the first step copies into a buffer with room
    assert layer.keys is not None
    first = layer.keys.data_ptr()
    for _ in range(HEADROOM):
        layer.update(*states(generator, 2, 1))
        assert layer.keys.data_ptr() == first  # no copy while there is room
    layer.update(*states(generator, 2, 1))
    assert layer.keys.data_ptr() != first  # the room ran out: one copy, with new room
    assert layer.get_seq_length() == 5 + 1 + HEADROOM + 1


def test_grow_in_steps_converts_only_plain_dynamic_caches() -> None:
    generator = torch.Generator().manual_seed(2)
    cache = DynamicCache()
    for index in range(3):
        cache.update(*states(generator, 2, 4), layer_idx=index)
    before = [layer.keys for layer in cache.layers]
    assert grow_in_steps(cache)
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    assert all(layer.keys is key for layer, key in zip(cache.layers, before, strict=True))
    assert grow_in_steps(cache)  # already converted: still fine

    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=8)]
    assert not grow_in_steps(sliding)
    assert type(sliding.layers[0]) is DynamicSlidingWindowLayer
    assert not grow_in_steps(object())
