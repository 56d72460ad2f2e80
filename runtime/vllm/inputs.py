"""The launcher's inputs, as plain typed values (no I/O).

``PresetLike`` is what the launcher reads from a preset: the field names are those of
``api.presets.Preset`` (the catalog), so a catalog entry is passed as is; a JSON file with the
same keys describes a model the catalog lacks (``--preset-file``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, Protocol

from runtime.vllm.errors import PresetError, SettingsError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
MIB = 2**20
GIB = 2**30


class PresetLike(Protocol):
    """The preset fields the launcher uses (a subset of ``api.presets.Preset``)."""

    @property
    def name(self) -> str: ...
    @property
    def hf_repo(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def context_length(self) -> int: ...
    @property
    def weight_bytes(self) -> int:
        """The weights held in 16 bits (parameters x 2)."""

    @property
    def parameters(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def num_attention_heads(self) -> int: ...
    @property
    def num_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def distributed(self) -> bool: ...
    @property
    def vllm_lora(self) -> bool: ...
    @property
    def trust_remote_code(self) -> bool: ...
    @property
    def chat_template(self) -> str | None: ...


@dataclass(frozen=True)
class PresetSpec:
    """A ``PresetLike`` read from JSON (``--preset-file``) or built in tests."""

    name: str
    hf_repo: str
    revision: str
    dtype: str
    context_length: int
    weight_bytes: int
    parameters: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    distributed: bool = False
    vllm_lora: bool = True
    trust_remote_code: bool = False
    chat_template: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "preset") -> PresetSpec:
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        missing = sorted(
            k
            for k, f in cls.__dataclass_fields__.items()
            if k not in kwargs and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise PresetError(f"{where}: missing keys {missing}; give every PresetLike field")
        try:
            spec = cls(**kwargs)
        except TypeError as exc:
            raise PresetError(f"{where}: {exc}") from None
        spec.check(where)
        return spec

    @classmethod
    def from_json(cls, text: str, where: str) -> PresetSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PresetError(f"{where}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PresetError(f"{where}: expected a JSON object with the preset's fields")
        return cls.from_mapping(data, where)

    def check(self, where: str) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise PresetError(f"{where}: dtype {self.dtype!r} is not one of {sorted(DTYPE_BYTES)}")
        for key in (
            "context_length",
            "weight_bytes",
            "parameters",
            "num_layers",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PresetError(f"{where}: {key} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Hardware:
    """The GPUs of this Pod's node, as detected (or as given by the reconciler)."""

    gpus: int
    gpu_memory_bytes: int
    """Total memory of one GPU as the driver reports it."""
    compute_capability: tuple[int, int] | None = None
    """``(8, 0)`` for an A100; None when unknown (treated as "no bfloat16")."""

    @property
    def supports_bfloat16(self) -> bool:
        return self.compute_capability is not None and self.compute_capability >= (8, 0)

    def describe(self) -> str:
        cc = (
            f", compute capability {self.compute_capability[0]}.{self.compute_capability[1]}"
            if self.compute_capability
            else ""
        )
        return f"{self.gpus} GPU(s) of {self.gpu_memory_bytes / GIB:.1f} GiB{cc}"


@dataclass(frozen=True)
class CpuHardware:
    """CPU device mode: no GPU; vLLM's KV cache lives in system memory
    (``VLLM_CPU_KVCACHE_SPACE``, whole GiB)."""

    kv_cache_gib: int
    """The KV-cache budget in GiB (``--cpu-kv-cache-gib``)."""
    bfloat16: bool = False
    """The CPU computes in bfloat16 (``avx512_bf16`` or ``amx_bf16``); else float32 is served."""
    cpus: int = 1

    def describe(self) -> str:
        bf16 = "with" if self.bfloat16 else "without"
        return f"CPU ({self.cpus} cores, {bf16} bfloat16), {self.kv_cache_gib} GiB of KV cache"


@dataclass(frozen=True)
class Topology:
    """Where this Pod sits in a multi-node StatefulSet (node_count 1: a single Pod)."""

    node_count: int = 1
    ordinal: int = 0
    leader_address: str | None = None
    """``<statefulset>-0.<headless service>``: where workers find the Ray head."""
    ray_port: int = 6379

    def __post_init__(self) -> None:
        if self.node_count < 1:
            raise SettingsError(f"--node-count {self.node_count} must be at least 1")
        if not 0 <= self.ordinal < self.node_count:
            raise SettingsError(
                f"Pod ordinal {self.ordinal} is outside the StatefulSet's {self.node_count} "
                "node(s); pass --node-count equal to the StatefulSet's replicas"
            )
        if self.node_count > 1 and not self.leader_address:
            raise SettingsError(
                "a multi-node launch needs the leader's address: pass --headless-service (and "
                "--pod-name or POD_NAME) or --leader-address"
            )

    @property
    def role(self) -> str:
        if self.node_count == 1:
            return "single"
        return "leader" if self.ordinal == 0 else "worker"


@dataclass(frozen=True)
class AdminDefaults:
    """What a cluster admin tunes (the defaults ConfigMap; the reconciler passes them on)."""

    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU vLLM may use (vLLM's --gpu-memory-utilization), in (0, 1]."""
    max_lora_rank: int = 256
    """The largest LoRA rank admins allow (combined adapters count Σ r_i); ≤ 512."""
    max_loras: int = 0
    """LoRAs in one batch (vLLM's --max-loras); 0: as many as are served."""
    overhead_bytes_per_gpu: int = 768 * MIB
    """Per-GPU memory kept for activations, CUDA graphs and the sampler."""
    min_model_len: int = 512
    """The shortest context worth serving; less is a 'does not fit' error."""
    max_model_len: int = 0
    """A cap on --max-model-len below what memory allows; 0: no cap."""
    extra_args: tuple[str, ...] = field(default=())
    """Appended verbatim to vLLM's arguments (the last value of a repeated flag wins)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0 or math.isnan(self.gpu_memory_utilization):
            raise SettingsError(
                f"--gpu-memory-utilization {self.gpu_memory_utilization} must be in (0, 1], "
                "for example 0.9"
            )
        if not 1 <= self.max_lora_rank <= 512:
            raise SettingsError(
                f"--max-lora-rank {self.max_lora_rank} must be from 1 to 512 (vLLM's largest)"
            )
        if self.max_loras < 0:
            raise SettingsError(f"--max-loras {self.max_loras} must be 0 (auto) or more")
        if self.overhead_bytes_per_gpu < 0 or self.min_model_len < 1 or self.max_model_len < 0:
            raise SettingsError(
                "--overhead-mib and --max-model-len must not be negative, --min-model-len ≥ 1"
            )
