"""How a preset is spread over this Pod's GPUs, and the context (``--max-model-len``) that fits.

Pure arithmetic, per GPU, in bytes (the same memory model as ``api.sizing``, on the GPUs the Pod
really has):

* dtype: the preset's, except bfloat16 on GPUs older than compute capability 8.0 (V100, T4) or
  of unknown capability, which get float16.
* tensor parallelism ``tp``: the largest size ≤ the node's GPUs that divides the attention heads
  and is compatible with the KV heads (divides them or is a multiple of them), as vLLM requires;
  pipeline parallelism ``pp`` = the number of nodes (one stage per node, whole layers).
* usable = ``gpu_memory_bytes × gpu_memory_utilization − overhead`` (activations of vLLM's
  profiling batch, CUDA graphs, the sampler; 768 MiB by default).
* weights = ``weight_bytes × dtype_bytes / 2 × ⌈layers / pp⌉ / layers / tp``.
* LoRA slots (only with adapters): vLLM pre-allocates ``max_loras`` slots of rank
  ``max_lora_rank`` for every LoRA-capable layer; bounded by
  ``max_loras × max_lora_rank × dtype_bytes × 2 × parameters / hidden × (stage share)`` with
  ``hidden = heads × head_dim`` (Σ(in + out) over a layer's matrices is at most twice their
  parameters over ``hidden``); not divided by ``tp`` (vLLM replicates half of each LoRA).
* KV cache per token = ``2 (K and V) × ⌈layers / pp⌉ × kv_heads × head_dim × dtype_bytes``,
  divided by ``min(tp, kv_heads)`` (KV heads are split over tensor ranks, replicated beyond).
* ``kv_cache_tokens = (usable − weights − LoRA) // KV per token``;
  ``max_model_len = min(context_length, kv_cache_tokens, admin cap)``. Fewer than
  ``min_model_len`` tokens (512 by default, or the whole context if shorter) is a
  ``ModelDoesNotFitError`` with the numbers and the fix.

CPU device mode (``plan_cpu_sizing``): no parallelism (one process, vLLM binds its own threads);
the KV cache is a budget of its own in system memory (``VLLM_CPU_KVCACHE_SPACE``, whole GiB), so
``kv_cache_tokens = budget // KV per token`` with the same KV-per-token formula (tp = pp = 1) and
the same floor and cap; dtype: an explicit ``--dtype`` wins, else bfloat16 where the CPU has it
(``avx512_bf16`` / ``amx_bf16``) and float32 otherwise.

vLLM measures the real KV cache at start-up; this estimate only has to be on the safe side so
that vLLM does not refuse ``--max-model-len``, and to fail before loading anything when the
model cannot fit at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.vllm.errors import LoraError, ModelDoesNotFitError, SettingsError
from runtime.vllm.inputs import (
    DTYPE_BYTES,
    GIB,
    MIB,
    AdminDefaults,
    CpuHardware,
    Hardware,
    PresetLike,
)

ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for --max-lora-rank."""


def serving_dtype(preset: PresetLike, hardware: Hardware) -> str:
    """The preset's dtype, except bfloat16 where the GPUs lack it (capability < 8.0)."""
    if preset.dtype == "bfloat16" and not hardware.supports_bfloat16:
        return "float16"
    return preset.dtype


def tensor_parallel_size(preset: PresetLike, gpus: int) -> int:
    """The largest TP size ≤ ``gpus`` that vLLM accepts for the preset's heads."""
    for t in range(max(gpus, 1), 0, -1):
        if preset.num_attention_heads % t:
            continue
        if preset.num_kv_heads % t and t % preset.num_kv_heads:
            continue
        return t
    return 1


def lora_rank_slot(rank: int, admin_limit: int) -> int:
    """The smallest vLLM ``--max-lora-rank`` value ≥ ``rank``; it must not exceed the limit."""
    slot = next((s for s in ALLOWED_LORA_RANKS if s >= rank), None)
    if slot is None or slot > admin_limit:
        needs = f"--max-lora-rank {slot}" if slot else "more than vLLM's largest, 512"
        raise LoraError(
            f"the adapters need LoRA rank {rank} ({needs}), above the admin's max LoRA rank "
            f"{admin_limit}; raise that limit, or serve fewer or lower-rank adapters (the "
            "Workspace's model name serves all adapters combined, whose rank is the sum of "
            "theirs)"
        )
    return slot


@dataclass(frozen=True)
class LoraSlots:
    """vLLM's LoRA buffers: ``count`` slots of rank ``rank``."""

    count: int
    rank: int


@dataclass(frozen=True)
class Sizing:
    """The outcome of ``plan_sizing``, with every number it used (the plan's log line)."""

    dtype: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    usable_bytes_per_gpu: int
    weight_bytes_per_gpu: int
    lora_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int
    max_model_len: int
    notes: tuple[str, ...] = ()


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def plan_sizing(
    preset: PresetLike,
    hardware: Hardware,
    *,
    node_count: int,
    defaults: AdminDefaults,
    lora: LoraSlots | None = None,
    dtype: str | None = None,
) -> Sizing:
    """Parallel sizes, dtype and max model length for ``preset`` on ``node_count`` such nodes
    (an explicit ``dtype`` wins over the preset's)."""
    notes: list[str] = []
    if hardware.gpus < 1:
        raise ModelDoesNotFitError(f"{preset.name}: the node has no GPU; vLLM needs at least one")
    if node_count > 1 and not preset.distributed:
        raise ModelDoesNotFitError(
            f"{preset.name} does not support multi-node inference, but {node_count} nodes were "
            "given; run it on one node with enough GPU memory"
        )
    explicit = dtype
    dtype = explicit or serving_dtype(preset, hardware)
    if dtype != preset.dtype and not explicit:
        notes.append(
            f"{preset.dtype} needs compute capability 8.0 ({hardware.describe()}): serving float16"
        )
    dtype_bytes = DTYPE_BYTES[dtype]
    tp = tensor_parallel_size(preset, hardware.gpus)
    if tp < hardware.gpus:
        notes.append(
            f"tensor parallelism {tp} of {hardware.gpus} GPUs: {preset.num_attention_heads} "
            f"attention heads and {preset.num_kv_heads} KV heads allow no more"
        )
    pp = node_count
    layers = math.ceil(preset.num_layers / pp)
    share = layers / preset.num_layers
    weights = math.ceil(preset.weight_bytes * dtype_bytes / 2 * share / tp)
    hidden = preset.num_attention_heads * preset.head_dim
    lora_bytes = 0
    if lora is not None:
        lora_bytes = math.ceil(
            lora.count * lora.rank * dtype_bytes * 2 * preset.parameters / hidden * share
        )
    kv_per_token = math.ceil(
        2
        * layers
        * preset.num_kv_heads
        * preset.head_dim
        * dtype_bytes
        / min(tp, preset.num_kv_heads)
    )
    usable = int(hardware.gpu_memory_bytes * defaults.gpu_memory_utilization) - (
        defaults.overhead_bytes_per_gpu
    )
    free = usable - weights - lora_bytes
    tokens = max(free, 0) // kv_per_token
    floor = min(defaults.min_model_len, preset.context_length)
    if tokens < floor:
        lora_text = f" + {_gib(lora_bytes)} of LoRA slots" if lora_bytes else ""
        fix = (
            "use an instance type with more GPU memory per GPU or more GPUs"
            + (
                ", or more nodes (the preset supports multi-node inference)"
                if preset.distributed
                else ""
            )
            + (", or fewer/lower-rank adapters" if lora_bytes else "")
        )
        raise ModelDoesNotFitError(
            f"{preset.name} does not fit: each of the {tp} GPU(s) used per node "
            f"({hardware.describe()}; {node_count} node(s)) offers {_gib(usable)} "
            f"(utilization {defaults.gpu_memory_utilization} minus "
            f"{defaults.overhead_bytes_per_gpu // MIB} MiB overhead) but needs "
            f"{_gib(weights)} of {dtype} weights{lora_text} plus KV cache for {floor} tokens "
            f"({_gib(floor * kv_per_token)}); {fix}"
        )
    max_len = min(preset.context_length, tokens)
    if defaults.max_model_len:
        max_len = min(max_len, defaults.max_model_len)
    if max_len < preset.context_length:
        cap = f", capped by the admin at {defaults.max_model_len}" if defaults.max_model_len else ""
        notes.append(
            f"max model length {max_len} of the model's {preset.context_length}: the KV cache "
            f"room holds {tokens} tokens{cap}"
        )
    return Sizing(
        dtype=dtype,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        usable_bytes_per_gpu=usable,
        weight_bytes_per_gpu=weights,
        lora_bytes_per_gpu=lora_bytes,
        kv_bytes_per_token_per_gpu=kv_per_token,
        kv_cache_tokens=tokens,
        max_model_len=max_len,
        notes=tuple(notes),
    )


CPU_DTYPES = ("bfloat16", "float32", "float16")


def cpu_dtype(cpu: CpuHardware, requested: str | None = None) -> str:
    """An explicit dtype wins; else bfloat16 where the CPU computes in it, float32 otherwise."""
    if requested:
        return requested
    return "bfloat16" if cpu.bfloat16 else "float32"


def plan_cpu_sizing(
    preset: PresetLike,
    cpu: CpuHardware,
    *,
    node_count: int,
    defaults: AdminDefaults,
    dtype: str | None = None,
) -> Sizing:
    """Dtype and max model length on CPU, from the KV-cache budget in system memory."""
    if node_count > 1:
        raise SettingsError(
            f"--node-count {node_count}: multi-node inference needs GPUs; on CPU a Workspace "
            "runs on one node (use --node-count 1, or a GPU instance type)"
        )
    if cpu.kv_cache_gib < 1:
        raise SettingsError(
            f"--cpu-kv-cache-gib {cpu.kv_cache_gib} must be at least 1 (vLLM's CPU KV cache "
            "is set in whole GiB)"
        )
    served = cpu_dtype(cpu, dtype)
    notes: list[str] = []
    if not dtype and preset.dtype != served:
        notes.append(f"{preset.dtype} weights served in {served} on this CPU ({cpu.describe()})")
    kv_per_token = 2 * preset.num_layers * preset.num_kv_heads * preset.head_dim
    kv_per_token *= DTYPE_BYTES[served]
    budget = cpu.kv_cache_gib * GIB
    tokens = budget // kv_per_token
    floor = min(defaults.min_model_len, preset.context_length)
    if tokens < floor:
        raise ModelDoesNotFitError(
            f"{preset.name} does not fit: the CPU KV cache of {cpu.kv_cache_gib} GiB "
            f"(--cpu-kv-cache-gib) holds {tokens} tokens of {served} KV cache "
            f"({kv_per_token} bytes each) but the context needs at least {floor} tokens "
            f"({_gib(floor * kv_per_token)}); raise --cpu-kv-cache-gib to "
            f"{math.ceil(floor * kv_per_token / GIB)} or more (the node needs that much free "
            "memory beside the weights), or lower --min-model-len"
        )
    max_len = min(preset.context_length, tokens)
    if defaults.max_model_len:
        max_len = min(max_len, defaults.max_model_len)
    if max_len < preset.context_length:
        notes.append(
            f"max model length {max_len} of the model's {preset.context_length}: the CPU KV "
            f"cache holds {tokens} tokens"
        )
    return Sizing(
        dtype=served,
        tensor_parallel_size=1,
        pipeline_parallel_size=1,
        usable_bytes_per_gpu=budget,
        weight_bytes_per_gpu=0,
        lora_bytes_per_gpu=0,
        kv_bytes_per_token_per_gpu=kv_per_token,
        kv_cache_tokens=tokens,
        max_model_len=max_len,
        notes=tuple(notes),
    )
