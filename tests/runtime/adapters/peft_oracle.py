"""PEFT itself as the oracle: each adapter's ΔW as PEFT computes it (its own scaling rules)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch


def load_base(base_dir: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    model.eval()
    return model


def peft_deltas(base_dir: Path, adapters: Mapping[str, Path]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {adapter: ΔW}}`` from PEFT's ``get_delta_weight`` (float32, weight layout)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = load_base(base_dir)
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(adapters[name], adapter_name=name)
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for module_name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_A:
                deltas.setdefault(module_name, {})[name] = module.get_delta_weight(name).detach()
    return deltas


def expected_weights(
    base_dir: Path, adapters: Mapping[str, Path], strengths: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """``W + Σ s_i · ΔW_i`` for every module some adapter targets, per PEFT."""
    base = dict(load_base(base_dir).named_parameters())
    out = {}
    for module, by_adapter in peft_deltas(base_dir, adapters).items():
        weight = base[f"{module}.weight"].detach().clone()
        for name, delta in by_adapter.items():
            weight += strengths[name] * delta
        out[module] = weight
    return out


def peft_merged_weights(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of ``PeftModel.from_pretrained(base, adapter).merge_and_unload()``."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_base(base_dir), adapter_dir).merge_and_unload()
    return {k: v.detach() for k, v in merged.state_dict().items()}
