"""Pure sizing estimator: does a preset fit a node shape, and how is it spread?

``estimate(preset, shape, runtime)`` returns a ``Fit`` (GPUs per node, node count,
tensor-parallel and pipeline-parallel sizes, dtype, KV-cache room and the max model length that
leaves) or a ``NoFit`` whose ``reason`` says why, in numbers.

The memory model (per GPU), and why it is honest
-------------------------------------------------
* Plan on ``usable_fraction`` (90%) of each GPU's *nominal* memory: vLLM's default
  ``gpu_memory_utilization`` is 0.9, and 90% of nominal is below what drivers report as total
  (a T4 reports 93.75% of its nominal 16 GiB).
* Reserve ``overhead_bytes_per_gpu`` (768 MiB) on every GPU for what is not weights or KV cache:
  activations of the profiling batch, CUDA graphs, the sampler, allocator fragmentation.
* Weights (parameters x 2 bytes) are split evenly over tensor-parallel ranks and, by whole layers,
  over pipeline stages (the largest stage counts).
* What is left must hold the KV cache of at least ``min_kv_tokens`` tokens (2048, or the whole
  context if the model's is shorter). The KV cache per token is
  ``2 x layers x kv_heads x head_dim x 2 bytes``, split over ``min(tp, kv_heads)`` ranks.
* ``max_model_len`` is the context the remaining memory holds, capped at the model's context
  length; runtimes pass it on (vLLM ``--max-model-len``) so a long-context model that fits with a
  shorter window still starts.

The seed's examples: falcon-7b on Standard_NC6s_v3 (one V100 16 GiB). Usable: 0.9 x 16 GiB -
768 MiB = 13.65 GiB; weights: 6.92e9 x 2 B = 12.89 GiB; left: 0.76 GiB. falcon-7b uses
multi-query attention (one KV head of 64 dims), so a token costs 8 KiB of KV cache and 0.76 GiB
holds about 99,000 tokens: the full 2048-token context fits many times over
(``max_model_len`` = 2048). On Standard_NC12s_v3 (two V100s) falcon-7b still runs on one GPU:
its 71 attention heads (a prime) allow no tensor parallelism under vLLM, while the transformers
runtime splits its layers over both GPUs. By the same arithmetic mistral-7b (13.5 GiB of
weights, 128 KiB per token) does *not* fit one V100: 0.15 GiB would hold ~1,200 tokens, under
the 2048-token floor; it fits Standard_NC12s_v3 with tensor parallelism 2.

Runtimes
--------
* ``vllm``: tensor parallelism over the GPUs of a node (the largest size ≤ the node's GPUs that
  divides the attention heads and is compatible with the KV heads); a preset marked
  ``distributed`` that does not fit one node is pipelined over the fewest nodes that hold it
  (``pipeline_parallel_size`` = node count).
* ``transformers``: one node only; the layers are split over all of its GPUs (accelerate's
  ``device_map="auto"``), reported as tp = pp = 1 with ``gpus_per_node`` = the node's GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from api.presets import Preset
from api.skus import GIB, MIB, GpuSku, SkuCatalog
from api.workspace import Runtime

DEFAULT_MAX_NODES = 16


@dataclass(frozen=True)
class Allowance:
    """The knobs of the memory model (see the module docstring)."""

    usable_fraction: float = 0.90
    overhead_bytes_per_gpu: int = 768 * MIB
    min_kv_tokens: int = 2048

    def usable_bytes(self, gpu_memory_bytes: int) -> int:
        return int(gpu_memory_bytes * self.usable_fraction) - self.overhead_bytes_per_gpu

    def floor_tokens(self, preset: Preset) -> int:
        return min(self.min_kv_tokens, preset.context_length)


DEFAULT_ALLOWANCE = Allowance()


@dataclass(frozen=True)
class NodeShape:
    """GPUs of one node: count and nominal memory per GPU."""

    gpus: int
    gpu_memory_bytes: int
    label: str
    supports_bfloat16: bool | None = None
    """None when unknown (prepared nodes without a compute-capability label)."""


def shape_of_sku(sku: GpuSku) -> NodeShape:
    return NodeShape(
        gpus=sku.gpu_count,
        gpu_memory_bytes=sku.gpu_memory_bytes,
        label=sku.describe(),
        supports_bfloat16=sku.supports_bfloat16 if sku.compute_capability else None,
    )


def shape_of_node(name: str, gpus: int, gpu_memory_mib: int) -> NodeShape:
    """A prepared node: allocatable ``nvidia.com/gpu`` and its ``nvidia.com/gpu.memory`` label
    (MiB, as NVIDIA GPU feature discovery sets it)."""
    return NodeShape(
        gpus=gpus,
        gpu_memory_bytes=gpu_memory_mib * MIB,
        label=f"node {name} ({gpus} GPU(s), {gpu_memory_mib / 1024:g} GiB each)",
    )


@dataclass(frozen=True)
class Fit:
    gpus_per_node: int
    node_count: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    dtype: str
    weight_bytes_per_gpu: int
    usable_bytes_per_gpu: int
    kv_cache_tokens: int
    max_model_len: int

    fits = True


@dataclass(frozen=True)
class NoFit:
    reason: str
    required_bytes: int
    """The least total GPU memory (nominal) the preset needs, on one ideal GPU."""

    fits = False


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def serving_dtype(preset: Preset, supports_bfloat16: bool | None) -> str:
    """The checkpoint's dtype, except bfloat16 on GPUs without it (or unknown): float16."""
    if preset.dtype == "bfloat16" and supports_bfloat16 is not True:
        return "float16"
    return preset.dtype


def valid_tensor_parallel_sizes(preset: Preset, limit: int) -> list[int]:
    """TP sizes vLLM accepts for the preset, up to ``limit``, largest first."""
    out = []
    for t in range(max(limit, 1), 0, -1):
        if preset.num_attention_heads % t:
            continue
        if preset.num_kv_heads % t and t % preset.num_kv_heads:
            continue
        out.append(t)
    return out


def min_total_gpu_memory_bytes(preset: Preset, allowance: Allowance = DEFAULT_ALLOWANCE) -> int:
    """Nominal memory of one GPU that would just hold the preset (an estimate)."""
    need = (
        preset.weight_bytes
        + allowance.floor_tokens(preset) * preset.kv_cache_bytes_per_token
        + allowance.overhead_bytes_per_gpu
    )
    return math.ceil(need / allowance.usable_fraction)


def _per_gpu(preset: Preset, tp: int, stages: int, layer_split: int) -> tuple[int, float]:
    """(weight bytes, KV bytes per token) on the most loaded GPU."""
    parts = stages * layer_split
    layers = math.ceil(preset.num_layers / parts)
    share = layers / preset.num_layers
    weights = math.ceil(preset.weight_bytes * share / tp)
    kv = preset.kv_cache_bytes_per_token * share / min(tp, preset.num_kv_heads)
    return weights, kv


def _try(
    preset: Preset,
    shape: NodeShape,
    allowance: Allowance,
    *,
    gpus: int,
    tp: int,
    nodes: int,
    layer_split: int,
) -> Fit | None:
    usable = allowance.usable_bytes(shape.gpu_memory_bytes)
    weights, kv = _per_gpu(preset, tp, nodes, layer_split)
    free = usable - weights
    if free <= 0:
        return None
    tokens = int(free // kv)
    if tokens < allowance.floor_tokens(preset):
        return None
    return Fit(
        gpus_per_node=gpus,
        node_count=nodes,
        tensor_parallel_size=tp,
        pipeline_parallel_size=nodes,
        dtype=serving_dtype(preset, shape.supports_bfloat16),
        weight_bytes_per_gpu=weights,
        usable_bytes_per_gpu=usable,
        kv_cache_tokens=tokens,
        max_model_len=min(preset.context_length, tokens),
    )


def estimate(
    preset: Preset,
    shape: NodeShape,
    runtime: Runtime | str = Runtime.VLLM,
    *,
    allowance: Allowance = DEFAULT_ALLOWANCE,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Fit | NoFit:
    """How ``preset`` runs on nodes of ``shape`` with ``runtime``, or why it cannot."""
    runtime = Runtime(runtime)
    required = min_total_gpu_memory_bytes(preset, allowance)
    floor = allowance.floor_tokens(preset)
    need_text = (
        f"{preset.name} needs {gib(preset.weight_bytes)} of weights plus KV cache for "
        f"{floor} tokens ({gib(floor * preset.kv_cache_bytes_per_token)}) and "
        f"{allowance.overhead_bytes_per_gpu // MIB} MiB of overhead per GPU"
    )
    if shape.gpus < 1:
        return NoFit(f"{shape.label} has no GPU", required)
    usable = allowance.usable_bytes(shape.gpu_memory_bytes)
    if usable <= 0:
        return NoFit(f"{shape.label}: GPUs too small to plan on", required)

    if runtime is Runtime.TRANSFORMERS:
        fit = _try(preset, shape, allowance, gpus=shape.gpus, tp=1, nodes=1, layer_split=shape.gpus)
        if fit is not None:
            return fit
        reason = (
            f"{need_text}; {shape.label} offers {gib(usable)} usable on each of its "
            f"{shape.gpus} GPU(s)"
        )
        if preset.distributed and preset.supports(Runtime.VLLM):
            multi = estimate(preset, shape, Runtime.VLLM, allowance=allowance, max_nodes=max_nodes)
            if isinstance(multi, Fit):
                reason += (
                    f"; the transformers runtime serves within one node, while vllm can "
                    f"spread it over {multi.node_count} nodes"
                )
        return NoFit(reason, required)

    tps = valid_tensor_parallel_sizes(preset, shape.gpus)
    tp = tps[0]
    fit = _try(preset, shape, allowance, gpus=tp, tp=tp, nodes=1, layer_split=1)
    if fit is not None:
        return fit
    if preset.distributed:
        for nodes in range(2, min(max_nodes, preset.num_layers) + 1):
            fit = _try(preset, shape, allowance, gpus=tp, tp=tp, nodes=nodes, layer_split=1)
            if fit is not None:
                return fit
        return NoFit(
            f"{need_text}; {shape.label} offers {gib(usable)} usable per GPU, and even "
            f"{min(max_nodes, preset.num_layers)} such nodes do not hold it",
            required,
        )
    tp_note = (
        f" (its {preset.num_attention_heads} attention heads allow tensor parallelism of at "
        f"most {tp} there)"
        if tp < shape.gpus
        else ""
    )
    return NoFit(
        f"{need_text}; on {shape.label} it can use {tp} GPU(s){tp_note} with {gib(usable)} "
        f"usable each, and {preset.name} does not support multi-node inference",
        required,
    )


def fitting_skus(
    preset: Preset,
    catalog: SkuCatalog,
    runtime: Runtime | str = Runtime.VLLM,
    *,
    allowance: Allowance = DEFAULT_ALLOWANCE,
    allowed: frozenset[str] | None = None,
    single_node: bool = False,
) -> list[tuple[GpuSku, Fit]]:
    """SKUs the preset fits, smallest first (fewest nodes, then least GPU memory).

    ``allowed`` (lowercase names) restricts the choice to an admin's allow-list."""
    out = []
    for sku in catalog:
        if allowed is not None and sku.name.lower() not in allowed:
            continue
        fit = estimate(preset, shape_of_sku(sku), runtime, allowance=allowance)
        if isinstance(fit, Fit) and (fit.node_count == 1 or not single_node):
            out.append((sku, fit))
    out.sort(key=lambda p: (p[1].node_count, p[1].node_count * p[0].total_gpu_memory_bytes))
    return out
