"""The preset model catalog: typed entries loaded from ``api/data/presets.yaml``.

``load_presets()`` reads and checks the packaged data once (cached); ``catalog.get(name)``
returns a ``Preset`` or ``None``; ``catalog.names()`` lists them in catalog order.
Derived sizes (KV cache per token, minimum GPU memory) are computed from the architecture by
``api.sizing``; they are estimates by nature.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import yaml

from api.errors import CatalogError
from api.workspace import Runtime

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
REVISION_SOURCES = ("kaito", "hf-snapshot", "local")


@dataclass(frozen=True)
class Preset:
    """One catalog model. Sizes are bytes; ``context_length`` is in tokens."""

    name: str
    hf_repo: str
    revision: str
    revision_source: str
    architecture: str
    model_type: str
    parameters: int
    dtype: str
    weight_bytes: int
    context_length: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    distributed: bool
    runtimes: tuple[Runtime, ...]
    vllm_lora: bool
    trust_remote_code: bool
    gated: bool
    chat_template: str | None
    """The Jinja chat template text (resolved from its name), or None: use the tokenizer's."""
    chat_template_name: str | None
    estimates: tuple[str, ...]
    notes: str = ""
    cpu_capable: bool = False
    """Small enough to serve on CPU (the first-run presets); GPU presets leave it false."""

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """16-bit K and V for every layer and KV head: 2 x layers x kv_heads x head_dim x 2."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 2

    def supports(self, runtime: Runtime | str) -> bool:
        return str(runtime) in {str(r) for r in self.runtimes}

    def is_estimate(self, field_name: str) -> bool:
        return field_name in self.estimates


_REQUIRED: dict[str, type] = {
    "name": str,
    "hf_repo": str,
    "revision": str,
    "revision_source": str,
    "architecture": str,
    "model_type": str,
    "parameters": int,
    "dtype": str,
    "weight_bytes": int,
    "context_length": int,
    "num_layers": int,
    "num_attention_heads": int,
    "num_kv_heads": int,
    "head_dim": int,
    "vocab_size": int,
    "distributed": bool,
    "runtimes": list,
    "vllm_lora": bool,
    "trust_remote_code": bool,
    "gated": bool,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "chat_template": (str, type(None)),
    "estimates": list,
    "notes": str,
    "cpu_capable": bool,
}


def _check_types(entry: Mapping[str, Any], where: str) -> None:
    """Every required key, no unknown key, each of its type."""
    unknown = set(entry) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    for key, typ in _REQUIRED.items():
        if key not in entry:
            raise CatalogError(f"{where}: missing {key}")
        value = entry[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise CatalogError(f"{where}: {key} must be {typ.__name__}, got {value!r}")
    for key, types in _OPTIONAL.items():
        if key in entry and not isinstance(entry[key], types):
            raise CatalogError(f"{where}: {key} has the wrong type: {entry[key]!r}")


def _check_values(entry: Mapping[str, Any], where: str) -> None:
    """The values that have a range or a closed set."""
    if entry["dtype"] not in DTYPE_BYTES:
        raise CatalogError(f"{where}: dtype {entry['dtype']!r} not in {sorted(DTYPE_BYTES)}")
    if entry["revision_source"] not in REVISION_SOURCES:
        raise CatalogError(f"{where}: revision_source must be one of {REVISION_SOURCES}")
    for key in ("parameters", "weight_bytes", "context_length", "num_layers", "head_dim"):
        if entry[key] <= 0:
            raise CatalogError(f"{where}: {key} must be positive")
    if entry["num_attention_heads"] % entry["num_kv_heads"]:
        raise CatalogError(f"{where}: num_attention_heads must be a multiple of num_kv_heads")


def _preset_from_entry(entry: Mapping[str, Any], templates: Mapping[str, str]) -> Preset:
    where = f"preset {entry.get('name', '?')!r}"
    _check_types(entry, where)
    _check_values(entry, where)
    try:
        runtimes = tuple(Runtime(r) for r in entry["runtimes"])
    except ValueError as exc:
        raise CatalogError(f"{where}: runtimes {entry['runtimes']!r}: {exc}") from exc
    if not runtimes:
        raise CatalogError(f"{where}: runtimes must not be empty")
    template_name = entry.get("chat_template")
    if template_name is not None and template_name not in templates:
        raise CatalogError(
            f"{where}: chat_template {template_name!r} is not in chat_templates.yaml"
        )
    field_names = {f.name for f in fields(Preset)}
    estimates = tuple(str(e) for e in entry.get("estimates", []))
    bad = [e for e in estimates if e not in field_names]
    if bad:
        raise CatalogError(f"{where}: estimates names unknown fields {bad}")
    return Preset(
        name=entry["name"],
        hf_repo=entry["hf_repo"],
        revision=entry["revision"],
        revision_source=entry["revision_source"],
        architecture=entry["architecture"],
        model_type=entry["model_type"],
        parameters=entry["parameters"],
        dtype=entry["dtype"],
        weight_bytes=entry["weight_bytes"],
        context_length=entry["context_length"],
        num_layers=entry["num_layers"],
        num_attention_heads=entry["num_attention_heads"],
        num_kv_heads=entry["num_kv_heads"],
        head_dim=entry["head_dim"],
        vocab_size=entry["vocab_size"],
        distributed=entry["distributed"],
        runtimes=runtimes,
        vllm_lora=entry["vllm_lora"],
        trust_remote_code=entry["trust_remote_code"],
        gated=entry["gated"],
        chat_template=None if template_name is None else templates[template_name],
        chat_template_name=template_name,
        estimates=estimates,
        notes=entry.get("notes", ""),
        cpu_capable=entry.get("cpu_capable", False),
    )


class PresetCatalog:
    """An ordered, read-only set of presets with exact-name lookup."""

    def __init__(self, presets: Iterable[Preset]) -> None:
        self._by_name: dict[str, Preset] = {}
        for preset in presets:
            if preset.name in self._by_name:
                raise CatalogError(f"preset {preset.name!r} is listed twice")
            self._by_name[preset.name] = preset

    def get(self, name: str) -> Preset | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[Preset]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def _data_text(name: str) -> str:
    return importlib.resources.files("api").joinpath("data", name).read_text(encoding="utf-8")


def load_chat_templates() -> dict[str, str]:
    """Name → Jinja text of the packaged chat templates."""
    doc = yaml.safe_load(_data_text("chat_templates.yaml"))
    templates = doc.get("templates") if isinstance(doc, dict) else None
    if not isinstance(templates, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in templates.items()
    ):
        raise CatalogError("chat_templates.yaml must hold `templates:` mapping names to text")
    return dict(templates)


def parse_presets(doc: Any, templates: Mapping[str, str]) -> PresetCatalog:
    """Build a catalog from a parsed ``presets.yaml`` document (raises ``CatalogError``)."""
    entries = doc.get("presets") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise CatalogError("a preset catalog must be a mapping with a `presets:` list")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise CatalogError(f"preset entries must be mappings, got {entry!r}")
        out.append(_preset_from_entry(entry, templates))
    return PresetCatalog(out)


@functools.cache
def load_presets() -> PresetCatalog:
    """The packaged preset catalog (read once per process)."""
    return parse_presets(yaml.safe_load(_data_text("presets.yaml")), load_chat_templates())
