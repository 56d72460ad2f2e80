"""The terms of every validation rule: ``FieldError``, the context the rules consult
(``ValidationContext``, ``NodeFacts``) and the small helpers their messages share."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from api import names
from api.config import DEFAULT_CONFIG, AdminConfig
from api.errors import QuantityError
from api.presets import PresetCatalog, load_presets
from api.quantity import parse_count
from api.sizing import DEFAULT_ALLOWANCE, Allowance
from api.skus import SkuCatalog, load_skus
from api.workspace import RUNTIME_ANNOTATION

GPU_RESOURCE = "nvidia.com/gpu"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""MiB per GPU, as NVIDIA GPU feature discovery labels nodes."""

ADAPTER_IMAGE_EXAMPLE = "myregistry.azurecr.io/adapters/falcon-7b-adapter:0.1"

MISSING: Any = object()
RUNTIME_FIELD = f"metadata.annotations[{RUNTIME_ANNOTATION}]"


@dataclass(frozen=True)
class FieldError:
    """One problem: the field's path, the bad value, what is wrong and how to fix it."""

    field: str
    message: str
    fix: str
    reason: str
    value: Any = MISSING

    def __str__(self) -> str:
        shown = "" if self.value is MISSING else f" (got {show_value(self.value)})"
        return f"{self.field}: {self.message}{shown}; fix: {self.fix}"


def show_value(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - default=str handles the rest
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class NodeFacts:
    """What validation needs from a Node: its labels and allocatable GPUs."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_allocatable: int = 0
    gpu_memory_mib: int | None = None

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Read a v1 Node (a plain dict as the API returns it)."""
        meta = node.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            gpus = parse_count(str(allocatable.get(GPU_RESOURCE, "0")))
        except QuantityError:
            gpus = 0
        memory = labels.get(GPU_MEMORY_LABEL, "")
        return cls(
            name=str(meta.get("name", "")),
            labels=labels,
            gpu_allocatable=gpus,
            gpu_memory_mib=int(memory) if memory.isdigit() else None,
        )


@dataclass(frozen=True)
class ValidationContext:
    """Everything the rules consult besides the object itself."""

    presets: PresetCatalog
    skus: SkuCatalog
    config: AdminConfig = DEFAULT_CONFIG
    allowance: Allowance = DEFAULT_ALLOWANCE
    nodes: Mapping[str, NodeFacts | None] | None = None
    """Preferred node name → facts (None: the node does not exist). None: not looked up."""

    @classmethod
    def default(cls, config: AdminConfig = DEFAULT_CONFIG, **kw: Any) -> ValidationContext:
        """The packaged catalogs, with the config's extra SKUs merged in."""
        return cls(
            presets=load_presets(), skus=config.sku_catalog(load_skus()), config=config, **kw
        )


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(lowered[c] for c in close)}?)" if close else ""


def fmt_list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def secret_rules(secrets: Sequence[str], where: str) -> list[FieldError]:
    out = []
    for i, secret in enumerate(secrets):
        problem = names.dns1123_subdomain(secret)
        if problem:
            out.append(
                FieldError(
                    f"{where}[{i}]",
                    f"is not a Secret name: it {problem}",
                    "use the name of a Secret in the Workspace's namespace",
                    "secret",
                    secret,
                )
            )
    return out
