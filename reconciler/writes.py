"""What the reconcile shell writes besides the workload (pure): Events about a Workspace, the
Workspace's finalizer and status bodies, and which NodeClaims are its.

An Event made from state (a NodeClaim's name and creation time) has a fixed name and time, so
re-emitting it after a crash is a harmless conflict rather than a second Event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler.labels import FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.observe import Obj
from reconciler.resources import WORKSPACES
from reconciler.status import REASON_DELETING, EventSpec


def claims_of(claims: Sequence[Obj], namespace: str, name: str) -> list[Obj]:
    """The NodeClaims of the Workspace ``namespace/name`` (by their labels)."""
    out = []
    for c in claims:
        labels = (c.get("metadata") or {}).get("labels") or {}
        if (
            labels.get(LABEL_WORKSPACE) == name
            and labels.get(LABEL_WORKSPACE_NAMESPACE) == namespace
        ):
            out.append(c)
    return out


def stored_worker_nodes(ws_obj: Mapping[str, Any]) -> list[str]:
    """``status.workerNodes`` as stored, when it has the right shape."""
    nodes = (ws_obj.get("status") or {}).get("workerNodes")
    return [n for n in nodes if isinstance(n, str)] if isinstance(nodes, list) else []


def has_finalizer(obj: Mapping[str, Any]) -> bool:
    return FINALIZER in ((obj.get("metadata") or {}).get("finalizers") or [])


def workspace_body(ws_obj: Mapping[str, Any], **fields: Any) -> Obj:
    """An apply body for the Workspace: its name and ``fields`` (``status``; the ``metadata``
    fields we own go in ``finalizers``). Fields left out are dropped from what we own."""
    meta = ws_obj["metadata"]
    own: Obj = {"name": meta["name"], "namespace": meta["namespace"]}
    if "finalizers" in fields:
        own["finalizers"] = fields.pop("finalizers")
    return {
        "apiVersion": WORKSPACES.api_version,
        "kind": WORKSPACES.kind,
        "metadata": own,
        **fields,
    }


def finalizer_removal(applied: Mapping[str, Any]) -> list[Obj] | None:
    """A JSON Patch removing our finalizer by index when it is still there after we gave it up
    (someone else, an older field manager, owns the entry); None when it is gone."""
    if not has_finalizer(applied):
        return None
    i = applied["metadata"]["finalizers"].index(FINALIZER)
    return [
        {"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{i}"},
    ]


def deleting_event(claims: Sequence[Mapping[str, Any]]) -> EventSpec:
    names = ", ".join(c["metadata"]["name"] for c in claims)
    return EventSpec("Normal", REASON_DELETING, f"deleting NodeClaims {names}")


def now_rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_created_event(claim: Mapping[str, Any]) -> EventSpec:
    """The ``NodeClaimCreated`` Event of a claim, from the claim itself."""
    requirements = (claim.get("spec") or {}).get("requirements") or [{}]
    values = requirements[0].get("values") or ["GPU"]
    return EventSpec(
        "Normal",
        "NodeClaimCreated",
        f"created NodeClaim {claim['metadata']['name']} for a {values[0]} node",
    )


def claim_event_name(ws_name: str, claim: Mapping[str, Any]) -> str:
    """One Event name per claim: re-emitting it after a crash is a harmless conflict."""
    return f"{ws_name}.{claim['metadata']['name']}.created"[:253]


def event_manifest(
    ws_obj: Mapping[str, Any],
    spec: EventSpec,
    *,
    now: datetime,
    component: str,
    instance: str,
    name: str = "",
    at: str = "",
) -> Obj:
    """An Event about the Workspace; ``name`` (default: random) and ``at`` (the time of what
    happened, default: now) make an Event re-emitted from state the same as the first."""
    meta = ws_obj.get("metadata") or {}
    ts = at or now_rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": name or f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": WORKSPACES.api_version,
            "kind": WORKSPACES.kind,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": spec.type,
        "reason": spec.reason,
        "message": spec.message[:1024],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
    }
