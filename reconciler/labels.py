"""Names the reconciler puts on objects: labels, annotations, the finalizer, the GPU taint."""

from __future__ import annotations

LABEL_WORKSPACE = "kaito.sh/workspace"
"""On every object we create: the Workspace's name (with the namespace label on NodeClaims)."""
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
"""On NodeClaims (cluster-scoped): the Workspace's namespace."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaito-py"
LABEL_NODEPOOL = "karpenter.sh/nodepool"
NODEPOOL = "kaito"
"""Karpenter wants a nodepool label on NodeClaims; KAITO's standalone claims use ``kaito``."""
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
"""Set by the StatefulSet controller (Kubernetes 1.28+) on each Pod: its ordinal."""
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
"""MiB per GPU, as NVIDIA GPU feature discovery labels nodes."""

FINALIZER = "kaito.sh/nodeclaims"
"""Held by a Workspace while NodeClaims it created exist (they are cluster-scoped, so owner
references to the namespaced Workspace are not allowed)."""

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "sku"
GPU_TAINT_VALUE = "gpu"
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NoSchedule"}
"""The taint on the NodeClaims we create (KAITO's ``sku=gpu:NoSchedule``), so that only GPU
workloads land there. Inference Pods also tolerate ``nvidia.com/gpu`` (the taint GPU node pools
of AKS and GKE carry) for prepared nodes."""

RUNTIME_PORT = 5000
SERVICE_PORT = 80
HEALTH_PATH = "/health"
ADAPTER_DIR = "/mnt/adapter"
CONTAINER_NAME = "inference"
