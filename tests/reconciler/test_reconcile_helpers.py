"""Pure helpers of the reconcile shell and the loop: apply decisions and event routing."""

from __future__ import annotations

from typing import Any

from reconciler.controller import admission_unavailable, keys_for
from reconciler.errors import ApiError, NotFoundError
from reconciler.labels import FINALIZER
from reconciler.outcome import claim_refusal, refused
from reconciler.plan import ANNOTATION_DESIRED_HASH, is_subset, needs_apply, strategy_of, with_hash
from reconciler.workload import choose_strategy, free_gpus
from reconciler.writes import finalizer_removal, has_finalizer, stored_worker_nodes, workspace_body
from tests.reconciler.goldens import ready_node


def test_subset_ignores_fields_the_server_adds_but_not_changed_or_removed_items() -> None:
    want = {"spec": {"ports": [{"port": 80, "targetPort": 5000}], "selector": {"a": "b"}}}
    have = {
        "spec": {
            "ports": [{"port": 80, "targetPort": 5000, "protocol": "TCP"}],
            "selector": {"a": "b"},
            "clusterIP": "10.0.0.1",
        }
    }
    assert is_subset(want, have)
    assert not is_subset(want, {"spec": {**have["spec"], "selector": {"a": "c"}}})
    two = {"spec": {**have["spec"], "ports": [*have["spec"]["ports"], {"port": 81}]}}
    assert not is_subset(want, two)
    assert is_subset({"q": 1}, {"q": "1"})


def test_apply_only_when_missing_changed_or_drifted() -> None:
    desired = with_hash({"kind": "Service", "metadata": {"name": "w"}, "spec": {"a": 1}})
    observed: dict[str, Any] = {
        "kind": "Service",
        "metadata": {
            "name": "w",
            "uid": "u",
            "annotations": {
                ANNOTATION_DESIRED_HASH: desired["metadata"]["annotations"][ANNOTATION_DESIRED_HASH]
            },
        },
        "spec": {"a": 1, "extra": True},
    }
    assert not needs_apply(desired, observed)
    assert needs_apply(desired, None)
    assert needs_apply(desired, {**observed, "spec": {"a": 2}})  # someone edited our field
    changed = with_hash({"kind": "Service", "metadata": {"name": "w"}, "spec": {}})
    assert needs_apply(changed, observed)  # we dropped a field: the hash tells


def test_strategy_follows_free_gpus() -> None:
    nodes = {"n": ready_node("n", "Standard_NC12s_v3", gpus=2, labels={})}
    pods = [
        {"status": {"phase": "Running"}, "spec": {"nodeName": "n", "gpus": 1}},
        {"status": {"phase": "Succeeded"}, "spec": {"nodeName": "n", "gpus": 1}},
    ]
    assert free_gpus(nodes, pods) == 1
    assert choose_strategy(1, 1) == "surge"
    assert choose_strategy(2, 1) == "recreate"
    assert strategy_of({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}}) == "surge"
    assert strategy_of({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0}}}}) == "recreate"
    assert strategy_of(None) is None


def test_changes_wake_the_right_workspaces() -> None:
    ws = [
        {
            "metadata": {"namespace": "a", "name": "ready"},
            "resource": {},
            "status": {
                "workerNodes": ["n1"],
                "conditions": [{"type": "ResourceReady", "status": "True"}],
            },
        },
        {
            "metadata": {"namespace": "a", "name": "other"},
            "resource": {},
            "status": {
                "workerNodes": ["n9"],
                "conditions": [{"type": "ResourceReady", "status": "True"}],
            },
        },
        {"metadata": {"namespace": "b", "name": "waiting"}, "resource": {}, "status": {}},
    ]
    pod = {"metadata": {"namespace": "a", "name": "p", "labels": {"kaito.sh/workspace": "ready"}}}
    assert keys_for("Pod", None, pod, ws) == {("a", "ready")}
    claim = {
        "metadata": {
            "name": "c",
            "labels": {"kaito.sh/workspace": "x", "kaito.sh/workspacenamespace": "z"},
        }
    }
    assert keys_for("NodeClaim", claim, None, ws) == {("z", "x")}
    node = {"metadata": {"name": "n1", "labels": {}}}
    assert keys_for("Node", None, node, ws) == {("a", "ready"), ("b", "waiting")}
    assert keys_for("Pod", None, {"metadata": {"namespace": "a", "name": "x"}}, ws) == set()


def test_a_node_wakes_only_workspaces_that_could_use_it() -> None:
    def ws(name: str, itype: str, ready: bool) -> dict[str, Any]:
        conds = [{"type": "ResourceReady", "status": "True" if ready else "False"}]
        return {
            "metadata": {"namespace": "ns", "name": name},
            "resource": {"instanceType": itype},
            "status": {"conditions": conds},
        }

    spaces = [
        ws("waiting-v100", "Standard_NC6s_v3", False),
        ws("waiting-a100", "x", False),
        ws("done", "Standard_NC6s_v3", True),
    ]
    free = {
        "metadata": {
            "name": "n",
            "labels": {"node.kubernetes.io/instance-type": "Standard_NC6s_v3"},
        }
    }
    assert keys_for("Node", None, free, spaces) == {("ns", "waiting-v100")}
    made = {
        "metadata": {
            "name": "m",
            "labels": {
                "node.kubernetes.io/instance-type": "Standard_NC6s_v3",
                "kaito.sh/workspace": "owner",
                "kaito.sh/workspacenamespace": "o",
            },
        }
    }
    assert keys_for("Node", made, None, spaces) == {("o", "owner")}


def test_apply_refusals_are_permanent_and_webhook_outages_are_not() -> None:
    typed = ApiError(
        500,
        "InternalError",
        "failed to create typed patch object (/x; apps/v1, Kind=Deployment): "
        '.spec.template.spec.containers[name="server"].bogusField: field not declared in schema',
    )
    assert refused(typed)
    assert refused(ApiError(422, "Invalid", "spec.template.spec.containers[1].name: Duplicate"))
    assert not refused(ApiError(500, "InternalError", "etcdserver: request timed out"))
    assert not refused(ApiError(503, "ServiceUnavailable", "try again"))
    down = ApiError(
        500,
        "InternalError",
        'Internal error occurred: failed calling webhook "validate.workspaces.kaito.sh": '
        "connect: connection refused",
    )
    assert admission_unavailable(down)
    assert not refused(down)
    assert not admission_unavailable(typed)


def test_a_missing_nodeclaim_api_is_reported_with_what_to_do() -> None:
    # Without Karpenter the NodeClaim create answers 404: the Workspace must say so (it used
    # to show no condition at all while the create was retried with backoff).
    cond = claim_refusal(
        NotFoundError(404, "NotFound", "the server could not find the requested resource")
    )
    assert cond is not None
    assert (cond.ok, cond.reason) == (False, "NodeClaimRefused")
    assert "install Karpenter" in cond.message
    assert "resource.preferredNodes" in cond.message
    forbidden = claim_refusal(ApiError(403, "Forbidden", "cannot create nodeclaims"))
    assert forbidden is not None
    assert "RBAC" in forbidden.message
    assert claim_refusal(ApiError(500, "InternalError", "etcdserver: request timed out")) is None


def test_workspace_bodies_own_only_what_they_name() -> None:
    ws = {"metadata": {"name": "w", "namespace": "n", "uid": "u", "finalizers": [FINALIZER]}}
    head = {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace"}
    assert workspace_body(ws) == {**head, "metadata": {"name": "w", "namespace": "n"}}
    assert workspace_body(ws, finalizers=[FINALIZER], status={"a": 1}) == {
        **head,
        "metadata": {"name": "w", "namespace": "n", "finalizers": [FINALIZER]},
        "status": {"a": 1},
    }
    assert has_finalizer(ws)
    assert finalizer_removal({"metadata": {"finalizers": ["other"]}}) is None
    assert finalizer_removal({"metadata": {"finalizers": ["other", FINALIZER]}}) == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
    assert stored_worker_nodes({"status": {"workerNodes": ["a", 3, "b"]}}) == ["a", "b"]
    assert stored_worker_nodes({"status": {"workerNodes": "a"}}) == []
