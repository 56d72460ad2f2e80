"""Writing adapters whose strength is baked in, for servers that apply LoRA at run time (vLLM).

Several adapters become one exact LoRA by stacking, per module::

    A = [A_1; A_2; ...]                               (rows: rank Σ r_i)
    B = [s_1·scaling_1·B_1, s_2·scaling_2·B_2, ...]   (columns)
    B @ A = Σ s_i · scaling_i · B_i @ A_i

Every module gets the same rank R (the largest Σ r_i over modules; Σ r_i when the adapters have no
``rank_pattern``): modules that some adapters do not target, or whose ranks sum to less, get zero
rows in A and zero columns in B, which add nothing. The written config has ``r = lora_alpha = R``
and no rslora or patterns, so PEFT's and vLLM's scaling is exactly 1. Tensors are written in
float32 (the server casts them to its LoRA dtype).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from runtime.adapters.errors import AdapterError
from runtime.adapters.lora import PEFT_PREFIX, LoraAdapter
from runtime.adapters.merge import check_same_layout
from runtime.adapters.spec import CONFIG_FILE

SOURCES_FILE = "kaito_sources.json"
"""Provenance written next to the adapter: which adapters at which strengths it holds."""


def stack_lora(
    blocks: Sequence[tuple[torch.Tensor, torch.Tensor, float]],
    rank: int,
    *,
    in_features: int,
    out_features: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(A_i, B_i, factor_i)`` into one ``(A, B)`` of ``rank`` with ``B@A = Σ f_i B_i@A_i``.

    A is (rank, in_features), B is (out_features, rank), both float32; unused rows/columns are 0.
    """
    used = sum(int(a.shape[0]) for a, _, _ in blocks)
    if used > rank:
        raise ValueError(f"blocks need rank {used}, more than the {rank} given")
    a_out = torch.zeros(rank, in_features, dtype=torch.float32)
    b_out = torch.zeros(out_features, rank, dtype=torch.float32)
    offset = 0
    for a, b, factor in blocks:
        r = int(a.shape[0])
        a_out[offset : offset + r] = a.to(torch.float32)
        b_out[:, offset : offset + r] = b.to(torch.float32) * factor
        offset += r
    return a_out, b_out


@dataclass(frozen=True)
class WrittenAdapter:
    """An adapter written by ``write_combined`` or ``write_scaled``."""

    path: Path
    rank: int
    modules: int
    sources: tuple[tuple[str, float], ...]
    """(adapter name, strength) of what it holds, in stacking order."""


def combined_rank(adapters: Sequence[LoraAdapter]) -> int:
    """R: the largest Σ r_i(module) over the modules the adapters target."""
    per_module: dict[str, int] = {}
    for adapter in adapters:
        for module in adapter.modules.values():
            per_module[module.name] = per_module.get(module.name, 0) + module.rank
    return max(per_module.values())


def _config(
    rank: int, modules: Sequence[str], fan_in_fan_out: bool, base: str | None
) -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "revision": None,
        "r": rank,
        "lora_alpha": rank,
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": list(modules),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "lora_bias": False,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _write(
    adapters: Sequence[LoraAdapter], out_dir: Path, base_model_name_or_path: str | None
) -> WrittenAdapter:
    if not adapters:
        raise AdapterError("no adapters to write: give at least one")
    check_same_layout(adapters)
    rank = combined_rank(adapters)
    modules = sorted({m for a in adapters for m in a.modules})
    tensors: dict[str, torch.Tensor] = {}
    for name in modules:
        users = [a.modules[name] for a in adapters if name in a.modules]
        blocks = [
            (m.lora_a, m.lora_b, a.strength * m.scaling)
            for a in adapters
            if (m := a.modules.get(name)) is not None
        ]
        lora_a, lora_b = stack_lora(
            blocks, rank, in_features=users[0].in_features, out_features=users[0].out_features
        )
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = lora_a.contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = lora_b.contiguous()
    bases = {a.base_model_name_or_path for a in adapters} - {None}
    base = base_model_name_or_path or (bases.pop() if len(bases) == 1 else None)
    config = _config(rank, modules, adapters[0].fan_in_fan_out, base)
    sources = tuple((a.name, a.strength) for a in adapters)
    # Write into a sibling temporary folder and rename, so a reader never sees half an adapter.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / SOURCES_FILE).write_text(
            json.dumps(
                [{"name": a.name, "path": str(a.path), "strength": a.strength} for a in adapters],
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return WrittenAdapter(path=out_dir, rank=rank, modules=len(modules), sources=sources)


def write_combined(
    adapters: Sequence[LoraAdapter],
    out_dir: Path,
    *,
    base_model_name_or_path: str | None = None,
) -> WrittenAdapter:
    """Write ONE PEFT LoRA adapter equal to ``Σ s_i · scaling_i · B_i @ A_i`` (see module doc).

    Adapters at strength 0 are kept (as zero columns of B), so the rank is Σ r_i as documented;
    a caller that wants a smaller rank leaves them out.
    """
    return _write(adapters, out_dir, base_model_name_or_path)


def write_scaled(
    adapter: LoraAdapter, out_dir: Path, *, base_model_name_or_path: str | None = None
) -> WrittenAdapter:
    """Write ``adapter`` with its strength and scaling baked into B (delta = s · scaling · B@A)."""
    return _write([adapter], out_dir, base_model_name_or_path)
