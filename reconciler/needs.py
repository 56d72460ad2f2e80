"""What a Workspace needs: GPUs per node, nodes, replicas, parallelism (pure).

A thin layer over ``api.sizing``: it picks the node shape (the instance type's SKU, or the first
preferred node's GPUs), asks the estimator, and turns the answer into the numbers the node plan
and the workload render use. A Workspace that cannot be served gets an ``Unsatisfiable`` with a
reason and a message that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.config import AdminConfig
from api.cpu import CpuFit, estimate_cpu
from api.presets import Preset, PresetCatalog
from api.sizing import Fit, NodeShape, estimate, shape_of_node, shape_of_sku
from api.skus import SkuCatalog
from api.workspace import Runtime, Workspace
from reconciler.labels import GPU_RESOURCE, LABEL_GPU_MEMORY, LABEL_INSTANCE_TYPE
from reconciler.observe import Obj

REASON_NO_FIT = "NoFit"
REASON_UNKNOWN_PRESET = "UnknownPreset"
REASON_UNKNOWN_INSTANCE_TYPE = "UnknownInstanceType"
REASON_NODE_NOT_FOUND = "NodeNotFound"
REASON_RUNTIME_UNSUPPORTED = "RuntimeNotSupported"
REASON_INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class Needs:
    runtime: Runtime
    preset: Preset | None
    """None for a template Workspace."""
    gpus_per_node: int
    nodes: int
    """Nodes to provide (preferred, existing or new)."""
    replicas: int
    """Pods: Deployment replicas, or StatefulSet replicas (one per node) when ``multi_node``."""
    multi_node: bool
    fit: Fit | None = None
    shape: str = ""
    cpu: CpuFit | None = None
    """Set for a CPU Workspace (a CPU instance type, ``api.cpu``): no GPU, sized by memory."""


@dataclass(frozen=True)
class Unsatisfiable:
    reason: str
    message: str


def gpu_count(quantity: Any) -> int:
    try:
        return int(str(quantity if quantity is not None else "0"))
    except ValueError:
        return 0


def node_shape(node: Obj, skus: SkuCatalog) -> NodeShape | None:
    """A prepared node's GPUs: allocatable ``nvidia.com/gpu`` and the GPU memory label, or the
    SKU named by its instance-type label."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    gpus = gpu_count(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE))
    memory = str(labels.get(LABEL_GPU_MEMORY, ""))
    if memory.isdigit():
        return shape_of_node(str(meta.get("name", "")), gpus, int(memory))
    sku = skus.get(str(labels.get(LABEL_INSTANCE_TYPE, "")))
    if sku is not None:
        return NodeShape(gpus=gpus, gpu_memory_bytes=sku.gpu_memory_bytes, label=sku.describe())
    return None


def template_gpus(template: Mapping[str, Any]) -> int:
    """GPUs one Pod of a template Workspace asks for (limits, else requests)."""
    total = 0
    for c in (template.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        q = (res.get("limits") or {}).get(
            GPU_RESOURCE, (res.get("requests") or {}).get(GPU_RESOURCE)
        )
        total += gpu_count(q)
    return total


def compute_needs(
    ws: Workspace,
    *,
    presets: PresetCatalog,
    skus: SkuCatalog,
    config: AdminConfig,
    nodes: Mapping[str, Obj],
) -> Needs | Unsatisfiable:
    """The sizing of ``ws``; ``nodes`` (name → slim Node) gives preferred nodes' shapes."""
    count = ws.resource.count or 1
    runtime = ws.runtime(config.default_runtime)
    inference = ws.inference
    if inference is None or (inference.preset is None and inference.template is None):
        return Unsatisfiable(
            REASON_INVALID_SPEC, "inference must give a preset or a template; add inference.preset"
        )
    if inference.preset is None:
        assert inference.template is not None
        return Needs(
            runtime=runtime,
            preset=None,
            gpus_per_node=template_gpus(inference.template),
            nodes=count,
            replicas=count,
            multi_node=False,
        )
    preset = presets.get(inference.preset.name)
    if preset is None:
        return Unsatisfiable(
            REASON_UNKNOWN_PRESET,
            f"preset {inference.preset.name!r} is not in the catalog; use one of "
            f"{', '.join(presets.names())}",
        )
    if not preset.supports(runtime):
        return Unsatisfiable(
            REASON_RUNTIME_UNSUPPORTED,
            f"preset {preset.name} is not served by the {runtime} runtime; set the annotation "
            f"kaito.sh/runtime to {' or '.join(str(r) for r in preset.runtimes)}",
        )
    cpu_needs = _cpu_needs(ws, preset, runtime, skus)
    if cpu_needs is not None:
        return cpu_needs
    return _gpu_needs(ws, preset, runtime, skus, nodes)


def _gpu_needs(
    ws: Workspace, preset: Preset, runtime: Runtime, skus: SkuCatalog, nodes: Mapping[str, Obj]
) -> Needs | Unsatisfiable:
    """A preset on GPU nodes: one node per replica, or one model over several nodes (then
    ``resource.count`` is the node count the sizing asks for)."""
    shape = _shape(ws, skus, nodes)
    if isinstance(shape, Unsatisfiable):
        return shape
    fit = estimate(preset, shape, runtime)
    if not isinstance(fit, Fit):
        return Unsatisfiable(REASON_NO_FIT, fit.reason)
    multi_node = fit.node_count > 1
    count = fit.node_count if multi_node else (ws.resource.count or 1)
    return Needs(
        runtime=runtime,
        preset=preset,
        gpus_per_node=fit.gpus_per_node,
        nodes=count,
        replicas=count,
        multi_node=multi_node,
        fit=fit,
        shape=shape.label,
    )


def _cpu_needs(
    ws: Workspace, preset: Preset, runtime: Runtime, skus: SkuCatalog
) -> Needs | Unsatisfiable | None:
    """A preset on a CPU instance type (``api.cpu``), or None for a GPU one."""
    sku = skus.get(ws.resource.instance_type or "")
    if sku is None or not sku.is_cpu:
        return None
    if not preset.cpu_capable:
        return Unsatisfiable(
            REASON_NO_FIT,
            f"{sku.name} is a CPU-only instance type and preset {preset.name} needs GPUs; use "
            "a CPU-capable preset on it, or a GPU instance type",
        )
    fit = estimate_cpu(preset, sku)
    if not isinstance(fit, CpuFit):
        return Unsatisfiable(REASON_NO_FIT, fit.reason)
    count = ws.resource.count or 1
    return Needs(
        runtime=runtime,
        preset=preset,
        gpus_per_node=0,
        nodes=count,
        replicas=count,
        multi_node=False,
        fit=fit.as_fit(),
        shape=sku.describe(),
        cpu=fit,
    )


def _shape(ws: Workspace, skus: SkuCatalog, nodes: Mapping[str, Obj]) -> NodeShape | Unsatisfiable:
    instance_type = ws.resource.instance_type
    if instance_type:
        sku = skus.get(instance_type)
        if sku is not None:
            return shape_of_sku(sku)
        if not ws.resource.preferred_nodes:
            return Unsatisfiable(
                REASON_UNKNOWN_INSTANCE_TYPE,
                f"instance type {instance_type!r} is not in the GPU SKU catalog; use a known SKU "
                "or ask the cluster admin to add it to extraSKUs",
            )
    names: Sequence[str] = ws.resource.preferred_nodes
    for name in names:
        node = nodes.get(name)
        if node is None:
            continue
        shape = node_shape(node, skus)
        if shape is not None:
            return shape
    if not any(n in nodes for n in names):
        return Unsatisfiable(
            REASON_NODE_NOT_FOUND,
            f"none of the preferred nodes {', '.join(names)} exists; check the names with "
            "`kubectl get nodes`",
        )
    return Unsatisfiable(
        REASON_NO_FIT,
        f"the GPU memory of the preferred nodes {', '.join(names)} is unknown: label them with "
        f"{LABEL_GPU_MEMORY}=<MiB per GPU> (NVIDIA GPU feature discovery does this) or with "
        f"{LABEL_INSTANCE_TYPE}=<a catalog SKU>",
    )
