"""Slim projections of watched objects (pure).

The caches keep only what the reconciler reads, which keeps memory low and lets the loop ignore
changes that do not matter (a node's heartbeat, a Pod's timestamps): an update wakes a Workspace
only when its projection changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.labels import GPU_RESOURCE

Obj = dict[str, Any]

_META_KEEP = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
    "finalizers",
    "creationTimestamp",
)


def _meta(obj: Mapping[str, Any], keep: tuple[str, ...] = _META_KEEP) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in keep if k in meta}


def _without_times(conditions: Any) -> list[Obj]:
    out = []
    for c in conditions or []:
        if isinstance(c, dict):
            out.append(
                {
                    k: v
                    for k, v in c.items()
                    if k
                    not in (
                        "lastHeartbeatTime",
                        "lastProbeTime",
                        "lastTransitionTime",
                        "lastUpdateTime",
                    )
                }
            )
    return out


def _head(obj: Mapping[str, Any]) -> Obj:
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}


def slim_generic(obj: Mapping[str, Any]) -> Obj:
    """Everything but ``managedFields`` (Workspaces, Deployments, StatefulSets, Services)."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    status = out.get("status")
    if isinstance(status, dict) and "conditions" in status and out.get("kind") != "Workspace":
        out["status"] = {**status, "conditions": _without_times(status["conditions"])}
    return out


def slim_node(obj: Mapping[str, Any]) -> Obj:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    alloc = status.get("allocatable") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        **_head(obj),
        "metadata": _meta(obj, ("name", "uid", "labels", "deletionTimestamp", "resourceVersion")),
        "spec": {k: spec[k] for k in ("taints", "unschedulable", "providerID") if k in spec},
        "status": {
            "allocatable": {GPU_RESOURCE: alloc.get(GPU_RESOURCE, "0")},
            "conditions": _without_times(ready),
        },
    }


def _container_status(cs: Mapping[str, Any]) -> Obj:
    state = cs.get("state") or {}
    slim_state: Obj = {}
    for key, val in state.items():
        if isinstance(val, dict):
            slim_state[key] = {
                k: v for k, v in val.items() if k in ("reason", "message", "exitCode")
            }
    return {
        "name": cs.get("name"),
        "ready": cs.get("ready", False),
        "restartCount": cs.get("restartCount", 0),
        "state": slim_state,
    }


def slim_pod(obj: Mapping[str, Any]) -> Obj:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    gpus = 0
    for c in spec.get("containers") or []:
        req = ((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE) or (
            (c.get("resources") or {}).get("requests") or {}
        ).get(GPU_RESOURCE)
        if req is not None:
            with contextlib.suppress(ValueError):
                gpus += int(str(req))
    return {
        **_head(obj),
        "metadata": _meta(
            obj,
            (
                "name",
                "namespace",
                "uid",
                "labels",
                "ownerReferences",
                "deletionTimestamp",
                "resourceVersion",
            ),
        ),
        "spec": {"nodeName": spec.get("nodeName", ""), "gpus": gpus},
        "status": {
            "phase": status.get("phase", ""),
            "reason": status.get("reason", ""),
            "message": status.get("message", ""),
            "conditions": _without_times(status.get("conditions")),
            "containerStatuses": [
                _container_status(c) for c in status.get("containerStatuses") or []
            ],
            "initContainerStatuses": [
                _container_status(c) for c in status.get("initContainerStatuses") or []
            ],
        },
    }


def slim_nodeclaim(obj: Mapping[str, Any]) -> Obj:
    status = obj.get("status") or {}
    return {
        **_head(obj),
        "metadata": _meta(obj),
        "spec": obj.get("spec") or {},
        "status": {
            "nodeName": status.get("nodeName", ""),
            "providerID": status.get("providerID", ""),
            "conditions": _without_times(status.get("conditions")),
        },
    }


def slim_configmap(obj: Mapping[str, Any]) -> Obj:
    return {**_head(obj), "metadata": _meta(obj), "data": obj.get("data") or {}}


SLIMMERS: dict[str, Callable[[Mapping[str, Any]], Obj]] = {
    "Node": slim_node,
    "Pod": slim_pod,
    "NodeClaim": slim_nodeclaim,
    "ConfigMap": slim_configmap,
}


def slim(obj: Mapping[str, Any]) -> Obj:
    """The projection for the object's kind."""
    return SLIMMERS.get(str(obj.get("kind")), slim_generic)(obj)


def comparable(obj: Mapping[str, Any]) -> Obj:
    """The projection without ``resourceVersion``: equal when nothing we read changed."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out
