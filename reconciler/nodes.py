"""The node plan (pure): which nodes serve a Workspace, and which NodeClaims to create.

Nodes are taken in this order, each only when *usable* (exists, not being deleted, Ready,
schedulable, matches the labelSelector, reports enough allocatable ``nvidia.com/gpu``):

1. the preferred nodes, in the order the user listed them;
2. nodes of the NodeClaims this Workspace created (by claim name);
3. other nodes with the labelSelector's labels and the instance type, not labelled for another
   Workspace; the nodes already serving the Workspace (``status.workerNodes``) first, so the
   choice is sticky.

When an instance type is given and those nodes are too few, one NodeClaim is created per
missing node. Claim names are deterministic (``<workspace>-<hash of namespace/name>-<i>``), so
a restarted reconciler re-applies the same names and never duplicates a claim. Claims are never
deleted because other nodes appeared; they go when the Workspace goes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from api.workspace import LabelSelector, Runtime, Workspace
from reconciler.labels import (
    ANNOTATION_DO_NOT_DISRUPT,
    GPU_RESOURCE,
    GPU_TAINT,
    LABEL_INSTANCE_TYPE,
    LABEL_MANAGED_BY,
    LABEL_NODEPOOL,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    MANAGED_BY,
    NODEPOOL,
)
from reconciler.needs import Needs, gpu_count
from reconciler.observe import Obj
from reconciler.resources import NODECLAIMS

REASON_READY = "NodesReady"
REASON_PROVISIONING = "Provisioning"
REASON_PROVISIONING_FAILED = "ProvisioningFailed"
REASON_NODE_NOT_READY = "NodeNotReady"
REASON_INSUFFICIENT_GPU = "InsufficientGPU"
REASON_NODE_NOT_FOUND = "NodeNotFound"
REASON_NODE_MISMATCH = "NodeLabelMismatch"


@dataclass(frozen=True)
class NodeClassRef:
    group: str = "karpenter.azure.com"
    kind: str = "AKSNodeClass"
    name: str = "default"


@dataclass(frozen=True)
class NodePlan:
    selected: tuple[str, ...]
    """Usable nodes chosen for the workload (at most ``needs.nodes``)."""
    create: tuple[Obj, ...] = ()
    """NodeClaim manifests to apply."""
    ready: bool = False
    reason: str = REASON_PROVISIONING
    message: str = ""
    claims: tuple[str, ...] = field(default_factory=tuple)
    """Names of this Workspace's existing NodeClaims."""


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def claim_name(ws: Workspace, index: int) -> str:
    """``<name>-<hash8>-<index>``: a DNS-1123 subdomain and label, the same on every run."""
    prefix = ws.name[:40].rstrip("-.") or "ws"
    return f"{prefix}-{short_hash(f'{ws.namespace}/{ws.name}')}-{index}"


def claim_index(ws: Workspace, name: str) -> int | None:
    prefix = claim_name(ws, 0)[:-1]
    tail = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def owner_labels(ws: Workspace) -> dict[str, str]:
    return {
        LABEL_WORKSPACE: ws.name,
        LABEL_WORKSPACE_NAMESPACE: ws.namespace,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector_requirements(selector: LabelSelector | None) -> list[dict[str, Any]]:
    """The labelSelector as node-selector requirements (matchLabels become ``In [value]``)."""
    if selector is None:
        return []
    out: list[dict[str, Any]] = [
        {"key": k, "operator": "In", "values": [v]}
        for k, v in sorted(selector.match_labels.items())
    ]
    for e in selector.match_expressions:
        req: dict[str, Any] = {"key": e.key, "operator": e.operator}
        if e.values:
            req["values"] = list(e.values)
        out.append(req)
    return out


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for e in selector.match_expressions:
        present, value = e.key in labels, labels.get(e.key)
        ok = {
            "In": present and value in e.values,
            "NotIn": not present or value not in e.values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(e.operator, False)
        if not ok:
            return False
    return True


STORAGE_RESOURCE = "storage"
"""The NodeClaim resource KAITO requests node disk with."""
GIB = 1024**3
MERGE_DISK_MARGIN = 1.1
"""Files stored twice (falcon's tied embedding: 14.4 GB downloaded for 13.8 GB of weights),
tokenizer and config files."""


def merges_weights(ws: Workspace, needs: Needs) -> bool:
    """True when the vLLM runtime will serve a merged copy of the weights: adapters on an
    architecture vLLM has no LoRA for (``--adapter-mode auto`` picks merge, e.g. Falcon)."""
    return bool(
        needs.runtime is Runtime.VLLM
        and needs.preset is not None
        and not needs.preset.vllm_lora
        and ws.inference is not None
        and ws.inference.adapters
    )


def merge_storage(ws: Workspace, needs: Needs) -> str | None:
    """The node disk a merged-weights Workspace requests (``<n>Gi``), or None when it does not
    merge: the download plus the merged copy, each the preset's ``weight_bytes``, plus
    ``MERGE_DISK_MARGIN``, rounded up to whole GiB."""
    if not merges_weights(ws, needs) or needs.preset is None:
        return None
    need = 2 * needs.preset.weight_bytes * MERGE_DISK_MARGIN
    return f"{math.ceil(need / GIB)}Gi"


def nodeclaim(ws: Workspace, index: int, needs: Needs, ref: NodeClassRef) -> Obj:
    """The NodeClaim manifest for node ``index`` of ``ws``."""
    selector = ws.resource.label_selector
    labels = {**(selector.label_map() if selector else {}), **owner_labels(ws)}
    labels[LABEL_NODEPOOL] = NODEPOOL
    requirements = [
        {
            "key": LABEL_INSTANCE_TYPE,
            "operator": "In",
            "values": [ws.resource.instance_type or ""],
        },
        {"key": LABEL_NODEPOOL, "operator": "In", "values": [NODEPOOL]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        *selector_requirements(selector),
    ]
    spec: dict[str, Any] = {
        "nodeClassRef": {"group": ref.group, "kind": ref.kind, "name": ref.name},
        "requirements": requirements,
    }
    if needs.cpu is None:
        spec["taints"] = [dict(GPU_TAINT)]
    requests: dict[str, str] = {}
    if needs.gpus_per_node:
        requests[GPU_RESOURCE] = str(needs.gpus_per_node)
    if needs.cpu is not None:
        requests["memory"] = needs.cpu.memory_request
    storage = merge_storage(ws, needs)
    if storage:
        requests[STORAGE_RESOURCE] = storage
    if requests:
        spec["resources"] = {"requests": requests}
    return {
        "apiVersion": NODECLAIMS.api_version,
        "kind": NODECLAIMS.kind,
        "metadata": {
            "name": claim_name(ws, index),
            "labels": labels,
            "annotations": {ANNOTATION_DO_NOT_DISRUPT: "true"},
        },
        "spec": spec,
    }


def _labels(node: Obj) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _ready(node: Obj) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def node_gpus(node: Obj) -> int:
    return gpu_count(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE))


def _kind(needs: Needs) -> str:
    return "CPU " if needs.cpu is not None else ""


def _with_gpus(needs: Needs, each: str = "") -> str:
    return "" if needs.cpu is not None else f" with {needs.gpus_per_node} GPU(s){each}"


def node_problem(node: Obj | None, ws: Workspace, needs: Needs) -> tuple[str, str] | None:
    """Why a node cannot serve ``ws`` (reason, message), or None when it is usable."""
    if node is None:
        return REASON_NODE_NOT_FOUND, "does not exist"
    meta = node.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return REASON_NODE_NOT_READY, "is being deleted"
    if not selector_matches(ws.resource.label_selector, _labels(node)):
        want = ", ".join(
            f"{r['key']} {r['operator']} {r.get('values', [])}"
            for r in selector_requirements(ws.resource.label_selector)
        )
        return (
            REASON_NODE_MISMATCH,
            f"lacks the labelSelector's labels ({want}); label it, e.g. "
            f"`kubectl label node {meta.get('name')} KEY=VALUE`",
        )
    if not _ready(node):
        return REASON_NODE_NOT_READY, "is not Ready"
    if (node.get("spec") or {}).get("unschedulable"):
        return REASON_NODE_NOT_READY, "is cordoned (unschedulable)"
    gpus = node_gpus(node)
    if gpus < needs.gpus_per_node:
        return (
            REASON_INSUFFICIENT_GPU,
            f"reports {gpus} allocatable {GPU_RESOURCE}, fewer than the {needs.gpus_per_node} "
            "needed; check that the NVIDIA device plugin runs there",
        )
    return None


def _claim_condition(claim: Obj, type_: str) -> Obj | None:
    for c in (claim.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _claim_state(claim: Obj, nodes: Mapping[str, Obj]) -> tuple[str, str]:
    """(reason, message) for a claim whose node is not usable yet."""
    name = claim["metadata"]["name"]
    launched = _claim_condition(claim, "Launched")
    if launched is not None and launched.get("status") == "False" and launched.get("reason"):
        return (
            REASON_PROVISIONING_FAILED,
            f"NodeClaim {name} failed to launch: {launched.get('reason')}: "
            f"{launched.get('message', '')}".rstrip(": "),
        )
    node_name = (claim.get("status") or {}).get("nodeName") or ""
    if not node_name or node_name not in nodes:
        return REASON_PROVISIONING, f"NodeClaim {name} is waiting for its node"
    return REASON_NODE_NOT_READY, f"node {node_name} of NodeClaim {name} is not Ready"


def _candidate(ws: Workspace, name: str, node: Obj, skip: Container[str]) -> bool:
    """A node of the instance type with the selector's labels, made for this Workspace or for
    none, usable or not (but not being deleted): a node that is briefly NotReady must not make
    us provision another for good. ``skip``: nodes counted elsewhere (preferred, claimed)."""
    labels = _labels(node)
    if name in skip or (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    instance_type = ws.resource.instance_type or ""
    if labels.get(LABEL_INSTANCE_TYPE, "").lower() != instance_type.lower():
        return False
    owner = labels.get(LABEL_WORKSPACE)
    if owner is not None and (
        owner != ws.name or labels.get(LABEL_WORKSPACE_NAMESPACE, ws.namespace) != ws.namespace
    ):
        return False
    if ws.resource.label_selector is None and not owner:
        return False  # without a selector, only nodes made for this Workspace
    return selector_matches(ws.resource.label_selector, labels)


def _claims_to_create(
    ws: Workspace, needs: Needs, ref: NodeClassRef, claims: Sequence[Obj], wanted: int
) -> list[Obj]:
    """New NodeClaims until ``wanted`` live ones exist, at the first free indexes."""
    live = sum(1 for c in claims if not c["metadata"].get("deletionTimestamp"))
    taken = {claim_index(ws, str(c["metadata"]["name"])) for c in claims}
    create: list[Obj] = []
    i = 0
    while live + len(create) < wanted:
        if i not in taken:
            create.append(nodeclaim(ws, i, needs, ref))
        i += 1
    return create


def plan_nodes(
    ws: Workspace,
    needs: Needs,
    *,
    nodes: Mapping[str, Obj],
    claims: Iterable[Obj],
    ref: NodeClassRef = NodeClassRef(),
) -> NodePlan:
    """Choose nodes and the NodeClaims to create. ``nodes`` is every Node by name; ``claims``
    are this Workspace's NodeClaims."""
    own_claims = sorted(claims, key=lambda c: str(c["metadata"]["name"]))
    claim_nodes = {
        str((c.get("status") or {}).get("nodeName")): c
        for c in own_claims
        if (c.get("status") or {}).get("nodeName")
    }
    preferred: Sequence[str] = ws.resource.preferred_nodes
    previous = set(ws.status.worker_nodes)

    def usable(name: str) -> bool:
        return node_problem(nodes.get(name), ws, needs) is None

    usable_preferred = [n for n in preferred if usable(n)]
    usable_claimed = [n for n in claim_nodes if usable(n)]
    matching: list[str] = []
    if ws.resource.instance_type:
        skip = {*preferred, *claim_nodes}
        matching = [name for name, node in nodes.items() if _candidate(ws, name, node, skip)]
    others = sorted((n for n in matching if usable(n)), key=lambda n: (n not in previous, n))
    pool = list(dict.fromkeys([*usable_preferred, *sorted(usable_claimed), *others]))
    selected = tuple(pool[: needs.nodes])

    create: list[Obj] = []
    if ws.resource.instance_type:
        wanted = max(0, needs.nodes - len(usable_preferred) - len(matching))
        create = _claims_to_create(ws, needs, ref, own_claims, wanted)

    names = tuple(str(c["metadata"]["name"]) for c in own_claims)
    if len(selected) >= needs.nodes:
        return NodePlan(
            selected,
            tuple(create),
            True,
            REASON_READY,
            f"{len(selected)} {_kind(needs)}node(s) ready{_with_gpus(needs, ' each')}: "
            f"{', '.join(selected)}",
            names,
        )
    problems = _shortfall(ws, needs, nodes, own_claims, create)
    reason, message = _shortfall_message(ws, needs, selected, problems)
    return NodePlan(selected, tuple(create), False, reason, message, names)


PROBLEM_PRIORITY = (
    REASON_PROVISIONING_FAILED,
    REASON_NODE_MISMATCH,
    REASON_NODE_NOT_FOUND,
    REASON_INSUFFICIENT_GPU,
    REASON_NODE_NOT_READY,
    REASON_PROVISIONING,
)
"""Not enough nodes: the reasons, most actionable first."""


def _shortfall(
    ws: Workspace,
    needs: Needs,
    nodes: Mapping[str, Obj],
    claims: Sequence[Obj],
    create: Sequence[Obj],
) -> list[tuple[str, str]]:
    """Why there are not enough nodes: (reason, message) per preferred node and NodeClaim."""
    problems: list[tuple[str, str]] = []
    for name in ws.resource.preferred_nodes:
        p = node_problem(nodes.get(name), ws, needs)
        if p is not None:
            problems.append((p[0], f"preferred node {name} {p[1]}"))
    for c in claims:
        if c["metadata"].get("deletionTimestamp"):
            continue
        node_name = str((c.get("status") or {}).get("nodeName") or "")
        p = node_problem(nodes[node_name], ws, needs) if node_name in nodes else None
        if node_name in nodes and p is None:
            continue
        if p is not None:
            problems.append((p[0], f"node {node_name} of NodeClaim {c['metadata']['name']} {p[1]}"))
        else:
            problems.append(_claim_state(c, nodes))
    for c in create:
        problems.append((REASON_PROVISIONING, f"creating NodeClaim {c['metadata']['name']}"))
    if not problems and ws.resource.instance_type:
        problems.append((REASON_PROVISIONING, "waiting for NodeClaims"))
    elif not problems:
        problems.append(
            (
                REASON_NODE_NOT_FOUND,
                "not enough preferred nodes; list more in resource.preferredNodes or set "
                "resource.instanceType to provision the rest",
            )
        )
    return problems


def _shortfall_message(
    ws: Workspace, needs: Needs, selected: Sequence[str], problems: list[tuple[str, str]]
) -> tuple[str, str]:
    """The condition's reason (the most actionable problem) and message (the first five)."""
    order = PROBLEM_PRIORITY
    problems = sorted(problems, key=lambda p: order.index(p[0]) if p[0] in order else len(order))
    reason = problems[0][0]
    detail = "; ".join(m for _, m in problems[:5])
    if len(problems) > 5:
        detail += f"; and {len(problems) - 5} more"
    missing = needs.nodes - len(selected)
    message = (
        f"{len(selected)} of {needs.nodes} {_kind(needs)}node(s){_with_gpus(needs)} ready "
        f"({missing} missing): {detail}"
    )
    if not ws.resource.instance_type and reason in (REASON_NODE_NOT_FOUND, REASON_NODE_MISMATCH):
        message += "; or set resource.instanceType to provision GPU nodes"
    return reason, message
