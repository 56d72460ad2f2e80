"""The node plan: preferred nodes, existing nodes, NodeClaims, and the reasons it reports."""

from __future__ import annotations

import json
from typing import Any

from api.config import DEFAULT_CONFIG
from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Workspace
from reconciler.labels import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.needs import Needs, Unsatisfiable, compute_needs
from reconciler.nodes import (
    REASON_INSUFFICIENT_GPU,
    REASON_NODE_MISMATCH,
    REASON_NODE_NOT_FOUND,
    REASON_NODE_NOT_READY,
    REASON_PROVISIONING,
    REASON_PROVISIONING_FAILED,
    claim_name,
    plan_nodes,
)
from tests.reconciler import examples
from tests.reconciler.goldens import ready_node, workspace


def needs_of(ws: Workspace, nodes: dict[str, Any] | None = None) -> Needs:
    n = compute_needs(
        ws, presets=load_presets(), skus=load_skus(), config=DEFAULT_CONFIG, nodes=nodes or {}
    )
    assert isinstance(n, Needs), n
    return n


def claim_for(
    manifest: dict[str, Any],
    *,
    node: str = "",
    deleting: bool = False,
    launched: dict[str, str] | None = None,
) -> dict[str, Any]:
    c: dict[str, Any] = json.loads(json.dumps(manifest))
    c["metadata"]["uid"] = "u-" + c["metadata"]["name"]
    if deleting:
        c["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    c["status"] = {"nodeName": node, "conditions": [launched] if launched else []}
    return c


def test_claim_names_are_deterministic_dns_labels() -> None:
    ws = workspace("falcon-vllm")
    name = claim_name(ws, 0)
    assert name == claim_name(workspace("falcon-vllm"), 0)
    assert name.startswith("workspace-falcon-7b-")
    assert name.endswith("-0")
    assert len(name) <= 63
    assert name == name.lower()
    other_ns = Workspace.from_dict(examples.load(examples.SEED_FALCON, namespace="team-b"))
    assert claim_name(other_ns, 0) != name


def test_restart_with_claims_in_flight_creates_no_duplicate() -> None:
    ws = workspace("llama-multinode")
    needs = needs_of(ws)
    first = plan_nodes(ws, needs, nodes={}, claims=[])
    assert [c["metadata"]["name"] for c in first.create] == [claim_name(ws, 0), claim_name(ws, 1)]
    # Only the first claim made it before a crash: the plan asks for the second only.
    again = plan_nodes(ws, needs, nodes={}, claims=[claim_for(first.create[0])])
    assert [c["metadata"]["name"] for c in again.create] == [claim_name(ws, 1)]
    both = [claim_for(c) for c in first.create]
    assert plan_nodes(ws, needs, nodes={}, claims=both).create == ()


def test_a_deleted_claim_is_replaced_under_a_new_index() -> None:
    ws = workspace("falcon-vllm")
    needs = needs_of(ws)
    first = plan_nodes(ws, needs, nodes={}, claims=[])
    going = claim_for(first.create[0], deleting=True)
    plan = plan_nodes(ws, needs, nodes={}, claims=[going])
    assert [c["metadata"]["name"] for c in plan.create] == [claim_name(ws, 1)]


def test_existing_matching_node_is_used_instead_of_a_claim() -> None:
    ws = workspace("falcon-vllm")
    nodes = {"spare": ready_node("spare", "Standard_NC6s_v3", gpus=1, labels={"apps": "falcon-7b"})}
    plan = plan_nodes(ws, needs_of(ws), nodes=nodes, claims=[])
    assert plan.ready
    assert plan.create == ()
    assert plan.selected == ("spare",)


def test_nodes_of_another_workspace_or_type_are_not_taken() -> None:
    ws = workspace("falcon-vllm")
    other = ready_node(
        "theirs",
        "Standard_NC6s_v3",
        gpus=1,
        labels={
            "apps": "falcon-7b",
            LABEL_WORKSPACE: "someone-else",
            LABEL_WORKSPACE_NAMESPACE: "x",
        },
    )
    wrong_type = ready_node("big", "Standard_NC24s_v3", gpus=4, labels={"apps": "falcon-7b"})
    plan = plan_nodes(ws, needs_of(ws), nodes={"theirs": other, "big": wrong_type}, claims=[])
    assert not plan.ready
    assert len(plan.create) == 1
    assert plan.reason == REASON_PROVISIONING


def test_a_briefly_not_ready_matching_node_does_not_provision_another() -> None:
    ws = workspace("falcon-vllm")
    node = ready_node("spare", "Standard_NC6s_v3", gpus=1, labels={"apps": "falcon-7b"})
    node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    plan = plan_nodes(ws, needs_of(ws), nodes={"spare": node}, claims=[])
    assert plan.create == ()
    assert not plan.ready


def test_preferred_node_without_the_selector_labels_is_reported() -> None:
    ws = workspace("phi-preferred")
    nodes = {
        "gpu-a": ready_node("gpu-a", "x", gpus=1, labels={"apps": "other"}),
        "gpu-b": ready_node("gpu-b", "x", gpus=1, labels={}),
    }
    needs = needs_of(ws, nodes)
    plan = plan_nodes(ws, needs, nodes=nodes, claims=[])
    assert not plan.ready
    assert plan.create == ()
    assert plan.reason == REASON_NODE_MISMATCH
    assert "preferred node gpu-a lacks the labelSelector's labels (apps In ['phi-2'])" in (
        plan.message
    )
    assert "kubectl label node gpu-a" in plan.message
    assert "set resource.instanceType" in plan.message


def test_preferred_node_without_gpus_is_insufficient_gpu() -> None:
    ws = workspace("phi-preferred")
    nodes = {n: ready_node(n, "x", gpus=0, labels={"apps": "phi-2"}) for n in ("gpu-a", "gpu-b")}
    needs = Needs(
        runtime=ws.runtime(), preset=None, gpus_per_node=1, nodes=1, replicas=1, multi_node=False
    )
    plan = plan_nodes(ws, needs, nodes=nodes, claims=[])
    assert plan.reason == REASON_INSUFFICIENT_GPU
    assert "reports 0 allocatable nvidia.com/gpu" in plan.message
    assert "NVIDIA device plugin" in plan.message


def test_missing_preferred_nodes_cannot_be_sized() -> None:
    ws = workspace("phi-preferred")
    got = compute_needs(
        ws, presets=load_presets(), skus=load_skus(), config=DEFAULT_CONFIG, nodes={}
    )
    assert isinstance(got, Unsatisfiable)
    assert got.reason == REASON_NODE_NOT_FOUND
    assert "gpu-a, gpu-b" in got.message


def test_failed_claim_says_why() -> None:
    ws = workspace("falcon-vllm")
    needs = needs_of(ws)
    made = plan_nodes(ws, needs, nodes={}, claims=[]).create[0]
    failed = claim_for(
        made,
        launched={
            "type": "Launched",
            "status": "False",
            "reason": "InsufficientCapacity",
            "message": "no capacity in westus2",
        },
    )
    plan = plan_nodes(ws, needs, nodes={}, claims=[failed])
    assert plan.reason == REASON_PROVISIONING_FAILED
    assert "InsufficientCapacity: no capacity in westus2" in plan.message
    assert plan.create == ()


def test_claim_node_not_ready_is_node_not_ready() -> None:
    ws = workspace("falcon-vllm")
    needs = needs_of(ws)
    made = plan_nodes(ws, needs, nodes={}, claims=[]).create[0]
    name = made["metadata"]["name"]
    node = ready_node(name, "Standard_NC6s_v3", gpus=1, labels=dict(made["metadata"]["labels"]))
    node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    plan = plan_nodes(ws, needs, nodes={name: node}, claims=[claim_for(made, node=name)])
    assert plan.reason == REASON_NODE_NOT_READY
    assert f"node {name} of NodeClaim {name} is not Ready" in plan.message


def test_selection_is_sticky_to_the_current_worker_nodes() -> None:
    obj = examples.load(examples.SEED_FALCON)
    obj["status"] = {"workerNodes": ["zz"]}
    ws = Workspace.from_dict(obj)
    nodes = {
        n: ready_node(n, "Standard_NC6s_v3", gpus=1, labels={"apps": "falcon-7b"})
        for n in ("aa", "zz")
    }
    plan = plan_nodes(ws, needs_of(ws), nodes=nodes, claims=[])
    assert plan.selected == ("zz",)
