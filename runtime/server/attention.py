"""Grouped-query attention without copying the cache, on the CPU.

``transformers``' ``sdpa`` attention expands a grouped-query model's key/value heads to one per
query head (``repeat_kv``: a copy of the layer's whole KV cache, every layer, every decode step)
whenever it passes a mask to torch's SDPA, because CUDA's fused kernels cannot do masked GQA. The
engine always passes a mask (its rows are left-padded), and torch's CPU SDPA does masked GQA
itself (``enable_gqa``). On the CPU the runtime therefore registers ``sdpa`` with that one
difference: same masks, same kernels, no copy. ``bench/README.md`` measured 10-20% more tokens/s
at 16 clients on the benchmark Llama (8 query heads, 4 KV heads) with the same greedy tokens.

Models without KV-head groups, with a position bias, or that use another attention function
are left as they are.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "kaito_sdpa_gqa"


def grouped_sdpa(  # noqa: PLR0917 (transformers' attention-function signature)
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``transformers``' ``sdpa_attention_forward`` with the KV heads left grouped."""
    from transformers.integrations.sdpa_attention import (  # noqa: PLC0415 (slow import)
        sdpa_attention_forward,
    )

    groups = int(getattr(module, "num_key_value_groups", 1))
    special = (
        kwargs.get("position_bias") is not None
        or kwargs.get("cache") is not None
        or kwargs.get("output_attentions", False)
    )
    if groups == 1 or special or query.device.type != "cpu":
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", True))
    causal = q_length > 1 and attention_mask is None and causal
    if causal and key.shape[2] > q_length:  # as sdpa_attention_forward: prefill, empty cache
        key, value = key[:, :, :q_length, :], value[:, :, :q_length, :]
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model: Any, device: torch.device) -> bool:
    """Switch a CPU model that uses ``sdpa`` to ``grouped_sdpa``; whether it was switched."""
    config = getattr(model, "config", None)
    if device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface  # noqa: PLC0415 (slow import)
    from transformers.masking_utils import (  # noqa: PLC0415
        ALL_MASK_ATTENTION_FUNCTIONS,
        AttentionMaskInterface,
    )

    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError, AttributeError) as exc:
        log.info("attention: keeping sdpa (%s)", exc)
        return False
    log.info("attention: SDPA with grouped KV heads (no per-step copy of the cache)")
    return True


__all__ = ["NAME", "grouped_sdpa", "use_grouped_sdpa"]
