"""The SKU catalog: instance types with their GPUs, from ``api/data/skus.yaml``.

A GPU SKU has ``gpu_count`` ≥ 1, ``gpu_memory_mib`` and ``gpu_model``. A CPU SKU (``is_cpu``)
has ``gpu_count`` 0, no GPU memory, model or compute capability, and gives the node's ``vcpus``
and ``memory_mib`` instead (CPU Workspaces are sized by node memory: ``api.cpu``).

Lookup is case-insensitive (``standard_nc6s_v3`` finds ``Standard_NC6s_v3``). Admins add SKUs
the catalog lacks through the defaults ConfigMap (``api.config``); ``SkuCatalog.merged`` returns
a new catalog with them, an admin entry replacing a built-in one of the same name.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from api.errors import CatalogError

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class GpuSku:
    """One instance type. ``gpu_memory_mib`` is per GPU, nominal (see skus.yaml); a CPU SKU
    (``gpu_count`` 0, ``gpu_memory_mib`` 0, ``gpu_model`` "none") gives ``vcpus`` and
    ``memory_mib`` (the node's memory, as the cloud sizes it)."""

    name: str
    gpu_count: int
    gpu_memory_mib: int
    gpu_model: str = "unknown"
    cloud: str = "custom"
    compute_capability: str | None = None
    aliases: tuple[str, ...] = ()
    vcpus: int | None = None
    memory_mib: int | None = None

    @property
    def is_cpu(self) -> bool:
        """A CPU-only instance type (no GPU)."""
        return self.gpu_count == 0

    @property
    def memory_bytes(self) -> int:
        """The node's memory (0 when the catalog does not give it)."""
        return (self.memory_mib or 0) * MIB

    @property
    def gpu_memory_bytes(self) -> int:
        return self.gpu_memory_mib * MIB

    @property
    def total_gpu_memory_bytes(self) -> int:
        return self.gpu_count * self.gpu_memory_bytes

    @property
    def supports_bfloat16(self) -> bool:
        """Compute capability 8.0 or more; unknown counts as no."""
        if self.compute_capability is None:
            return False
        major = self.compute_capability.split(".", 1)[0]
        return major.isdigit() and int(major) >= 8

    def describe(self) -> str:
        """``Standard_NC12s_v3 (2 x NVIDIA V100 16GB, 16 GiB each)``, or for a CPU SKU
        ``Standard_D8s_v5 (CPU only: 8 vCPUs, 32 GiB memory)``."""
        if self.is_cpu:
            return (
                f"{self.name} (CPU only: {self.vcpus} vCPUs, "
                f"{(self.memory_mib or 0) / 1024:g} GiB memory)"
            )
        gib = self.gpu_memory_mib / 1024
        size = f"{gib:g} GiB"
        return f"{self.name} ({self.gpu_count} x {self.gpu_model}, {size} each)"


def sku_from_entry(entry: Mapping[str, Any], where: str = "sku") -> GpuSku:
    """Build a ``GpuSku`` from a mapping with the keys of skus.yaml (raises ``CatalogError``)."""
    allowed = {
        "name",
        "cloud",
        "gpu_count",
        "gpu_memory_mib",
        "gpu_model",
        "compute_capability",
        "aliases",
        "vcpus",
        "memory_mib",
    }
    unknown = set(entry) - allowed
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"{where}: name must be a non-empty string, got {name!r}")
    count = entry.get("gpu_count")
    if count == 0 and not isinstance(count, bool):
        return _cpu_sku(entry, name.strip(), where)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 64:
        raise CatalogError(
            f"{where} {name}: gpu_count must be an integer from 1 to 64, got {count!r} (or 0 "
            "for a CPU SKU, with vcpus and memory_mib)"
        )
    mib = entry.get("gpu_memory_mib")
    if isinstance(mib, bool) or not isinstance(mib, int) or not 256 <= mib <= 4 * 1024 * 1024:
        raise CatalogError(
            f"{where} {name}: gpu_memory_mib must be a whole number of MiB from 256 to "
            f"4194304, got {mib!r}"
        )
    cc = entry.get("compute_capability")
    if cc is not None and not isinstance(cc, str):
        raise CatalogError(f'{where} {name}: compute_capability must be a string like "8.0"')
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise CatalogError(f"{where} {name}: aliases must be a list of strings")
    return GpuSku(
        name=name.strip(),
        gpu_count=count,
        gpu_memory_mib=mib,
        gpu_model=str(entry.get("gpu_model", "unknown")),
        cloud=str(entry.get("cloud", "custom")),
        compute_capability=cc,
        aliases=tuple(aliases),
        vcpus=_optional_int(entry, "vcpus", 1, 4096, where=where, name=name),
        memory_mib=_optional_int(entry, "memory_mib", 512, MAX_MEMORY_MIB, where=where, name=name),
    )


MAX_MEMORY_MIB = 64 * 1024 * 1024
GPU_KEYS = ("gpu_memory_mib", "gpu_model", "compute_capability")


def _optional_int(
    entry: Mapping[str, Any], key: str, low: int, high: int, *, where: str, name: str
) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatalogError(
            f"{where} {name}: {key} must be a whole number from {low} to {high}, got {value!r}"
        )
    return value


def _cpu_sku(entry: Mapping[str, Any], name: str, where: str) -> GpuSku:
    """A CPU SKU: gpu_count 0, vcpus and memory_mib, no GPU keys."""
    gpu_keys = [k for k in GPU_KEYS if k in entry]
    if gpu_keys:
        raise CatalogError(
            f"{where} {name}: gpu_count must be an integer from 1 to 64 for a GPU SKU; with "
            f"gpu_count 0 (a CPU SKU) leave out {gpu_keys} and give vcpus and memory_mib"
        )
    vcpus = _optional_int(entry, "vcpus", 1, 4096, where=where, name=name)
    memory = _optional_int(entry, "memory_mib", 512, MAX_MEMORY_MIB, where=where, name=name)
    if vcpus is None or memory is None:
        raise CatalogError(
            f"{where} {name}: a CPU SKU (gpu_count 0) needs vcpus and memory_mib (the node's "
            "memory sizes CPU Workspaces)"
        )
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise CatalogError(f"{where} {name}: aliases must be a list of strings")
    return GpuSku(
        name=name,
        gpu_count=0,
        gpu_memory_mib=0,
        gpu_model="none",
        cloud=str(entry.get("cloud", "custom")),
        aliases=tuple(aliases),
        vcpus=vcpus,
        memory_mib=memory,
    )


class SkuCatalog:
    """Ordered SKUs with case-insensitive lookup by name or alias."""

    def __init__(self, skus: Iterable[GpuSku]) -> None:
        self._skus: list[GpuSku] = []
        self._index: dict[str, GpuSku] = {}
        for sku in skus:
            for key in (sku.name, *sku.aliases):
                if key.lower() in self._index:
                    raise CatalogError(f"SKU name {key!r} is listed twice")
                self._index[key.lower()] = sku
            self._skus.append(sku)

    def get(self, name: str) -> GpuSku | None:
        return self._index.get(name.strip().lower())

    def names(self) -> list[str]:
        return [s.name for s in self._skus]

    def gpu_names(self) -> list[str]:
        return [s.name for s in self._skus if not s.is_cpu]

    def cpu_names(self) -> list[str]:
        return [s.name for s in self._skus if s.is_cpu]

    def __iter__(self) -> Iterator[GpuSku]:
        return iter(self._skus)

    def __len__(self) -> int:
        return len(self._skus)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def merged(self, extra: Iterable[GpuSku]) -> SkuCatalog:
        """A new catalog with ``extra`` SKUs; one whose name (any case) or alias matches a
        built-in SKU replaces it."""
        extra = list(extra)
        replaced = {k.lower() for s in extra for k in (s.name, *s.aliases)}
        kept = [s for s in self._skus if not ({k.lower() for k in (s.name, *s.aliases)} & replaced)]
        return SkuCatalog([*kept, *extra])


def parse_skus(doc: Any) -> SkuCatalog:
    entries = doc.get("skus") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise CatalogError("a SKU catalog must be a mapping with a `skus:` list")
    return SkuCatalog(
        sku_from_entry(e, f"skus[{i}]") if isinstance(e, dict) else _bad(i, e)
        for i, e in enumerate(entries)
    )


def _bad(i: int, e: object) -> GpuSku:
    raise CatalogError(f"skus[{i}] must be a mapping, got {e!r}")


@functools.cache
def load_skus() -> SkuCatalog:
    """The packaged SKU catalog (read once per process)."""
    text = importlib.resources.files("api").joinpath("data", "skus.yaml").read_text("utf-8")
    return parse_skus(yaml.safe_load(text))
