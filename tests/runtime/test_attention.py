"""SDPA with grouped KV heads on the CPU (``runtime.server.attention``), on real tiny models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from runtime.server.attention import NAME, grouped_sdpa, use_grouped_sdpa
from tests.support.tiny_model import TEST_SPEC, build_tiny_llama


def _qkv(q_len: int, kv_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    query = torch.randn(3, 4, q_len, 8, generator=gen)
    key = torch.randn(3, 2, kv_len, 8, generator=gen)
    value = torch.randn(3, 2, kv_len, 8, generator=gen)
    return query, key, value


@pytest.mark.parametrize("q_len", [1, 5])
def test_masked_attention_equals_transformers_sdpa(q_len: int) -> None:
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)
    query, key, value = _qkv(q_len, 9)
    mask = torch.ones(3, 1, q_len, 9, dtype=torch.bool)
    mask[0, :, :, :4] = False  # a left-padded row
    mask[1, :, :, :1] = False
    ours, _ = grouped_sdpa(module, query, key, value, mask, scaling=0.3)  # type: ignore[arg-type]
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)  # type: ignore[arg-type]
    assert ours.shape == theirs.shape == (3, q_len, 4, 8)
    torch.testing.assert_close(ours, theirs)


def test_unmasked_prefill_is_causal_like_transformers_sdpa() -> None:
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)
    query, key, value = _qkv(6, 6)
    ours, _ = grouped_sdpa(module, query, key, value, None)  # type: ignore[arg-type]
    theirs, _ = sdpa_attention_forward(module, query, key, value, None)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, theirs)
    # the first position sees only itself: causal, not full attention
    first = value[:, :, :1].repeat_interleave(2, dim=1).transpose(1, 2)
    torch.testing.assert_close(ours[:, :1], first)


def _left_padded_greedy(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[0, 0, 0, 5, 9, 14, 3], [4, 8, 15, 16, 23, 42, 7]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    out: torch.Tensor = model.generate(  # type: ignore[operator]
        input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0
    )
    return out


@pytest.fixture(scope="module")
def gqa_model_dir() -> Path:
    assert TEST_SPEC.num_attention_heads > TEST_SPEC.num_key_value_heads  # grouped heads
    return build_tiny_llama(TEST_SPEC)


def test_a_cpu_gqa_model_is_switched_and_generates_the_same_tokens(gqa_model_dir: Path) -> None:
    model: Any = AutoModelForCausalLM.from_pretrained(gqa_model_dir, dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "sdpa"
    before = _left_padded_greedy(model)
    assert use_grouped_sdpa(model, torch.device("cpu"))
    assert model.config._attn_implementation == NAME
    after = _left_padded_greedy(model)
    assert torch.equal(before, after)


def test_other_devices_and_attention_functions_are_left_alone(gqa_model_dir: Path) -> None:
    model: Any = AutoModelForCausalLM.from_pretrained(gqa_model_dir, dtype=torch.float32)
    assert not use_grouped_sdpa(model, torch.device("cuda"))
    assert model.config._attn_implementation == "sdpa"
    eager = AutoModelForCausalLM.from_pretrained(
        gqa_model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    assert not use_grouped_sdpa(eager, torch.device("cpu"))
    assert eager.config._attn_implementation == "eager"


def test_heads_without_groups_take_transformers_path() -> None:
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)
    gen = torch.Generator().manual_seed(3)
    query, key, value = (torch.randn(2, 2, 1, 8, generator=gen) for _ in range(3))
    mask = torch.ones(2, 1, 1, 1, dtype=torch.bool)
    ours, _ = grouped_sdpa(module, query, key, value, mask)  # type: ignore[arg-type]
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, theirs)
