"""Fake GPU nodes for KWOK: a Node object whose status reports ``nvidia.com/gpu``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.support.procs import WaitTimeout, wait_until

if TYPE_CHECKING:
    from .harness import ControlPlane

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"  # MiB per GPU, as NVIDIA GPU feature discovery labels it


def fake_gpu_node(
    name: str,
    instance_type: str,
    *,
    gpus: int = 1,
    gpu_product: str = "Tesla-V100-PCIE-16GB",
    gpu_memory_mib: int = 16384,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    cpu: str = "32",
    memory: str = "256Gi",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Node manifest (pure); KWOK manages it for its ``kwok.x-k8s.io/node`` annotation."""
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        LABEL_INSTANCE_TYPE: instance_type,
        LABEL_GPU_PRODUCT: gpu_product,
        LABEL_GPU_COUNT: str(gpus),
        LABEL_GPU_MEMORY: str(gpu_memory_mib),
        **(labels or {}),
    }
    resources = {
        "cpu": cpu,
        "memory": memory,
        "pods": "110",
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", **(annotations or {})},
        },
        "spec": {"taints": taints or []},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
            },
        },
    }


def fake_cpu_node(
    name: str,
    instance_type: str,
    *,
    cpu: str,
    memory: str,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A CPU-only Node manifest (no GPU labels, no ``nvidia.com/gpu``), managed by KWOK."""
    node = fake_gpu_node(
        name, instance_type, gpus=0, labels=labels, taints=taints, cpu=cpu, memory=memory
    )
    node_labels = node["metadata"]["labels"]
    for key in (LABEL_GPU_PRODUCT, LABEL_GPU_COUNT, LABEL_GPU_MEMORY):
        node_labels.pop(key, None)
    for field in ("capacity", "allocatable"):
        node["status"][field].pop(GPU_RESOURCE, None)
    return node


def create_fake_gpu_node(
    cp: ControlPlane, name: str, instance_type: str, **kw: Any
) -> dict[str, Any]:
    """Create the node with kubectl and return the manifest."""
    manifest = fake_gpu_node(name, instance_type, **kw)
    cp.kubectl("create", "-f", "-", input=json.dumps(manifest))
    return manifest


def wait_node_ready(cp: ControlPlane, name: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until KWOK reports the node Ready and return it."""
    node: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        nonlocal node
        node = cp.kubectl_json("get", "node", name)
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return node if conds.get("Ready") == "True" else None

    try:
        return wait_until(ready, timeout, f"node {name} Ready", every=0.3)
    except WaitTimeout:
        raise WaitTimeout(f"node {name} not Ready after {timeout}s: {node.get('status')}") from None
