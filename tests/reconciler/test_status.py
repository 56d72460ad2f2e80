"""Status: pod failures, rollouts, transition times, events."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.observe import slim
from reconciler.status import (
    REASON_CRASH_LOOP,
    REASON_IMAGE_PULL,
    REASON_INSUFFICIENT_GPU,
    REASON_PODS_NOT_READY,
    REASON_RESOURCE_NOT_READY,
    REASON_ROLLING_OUT,
    REASON_SERVICE_READY,
    Cond,
    build_status,
    inference_condition,
    same_status,
    status_events,
)

OK = Cond(True, "NodesReady", "1 node(s) ready")


def pod(
    name: str = "p-1",
    *,
    waiting: str | None = None,
    ready: bool = True,
    init_waiting: str | None = None,
    unschedulable: str | None = None,
) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": "inference",
        "ready": ready,
        "restartCount": 0,
        "state": {"running": {"startedAt": "x"}},
    }
    if waiting:
        cs = {
            **cs,
            "ready": False,
            "restartCount": 4,
            "state": {"waiting": {"reason": waiting, "message": f"{waiting} details"}},
        }
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": [cs]}
    if init_waiting:
        status["phase"] = "Pending"
        status["initContainerStatuses"] = [
            {
                "name": "falcon-7b-adapter",
                "ready": False,
                "state": {"waiting": {"reason": init_waiting}},
            }
        ]
    if unschedulable:
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                    "lastTransitionTime": "t",
                }
            ],
        }
    return slim(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": status,
        }
    )


def deployment(
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int = 1,
    updated: int = 1,
    ready: int = 1,
    available: int = 1,
    revision: str = "1",
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "w",
            "generation": generation,
            "annotations": {"deployment.kubernetes.io/revision": revision},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
        },
    }


def infer(workload: dict[str, Any] | None, pods: list[dict[str, Any]], resource: Cond = OK) -> Cond:
    return inference_condition(
        resource=resource,
        workload=workload,
        pods=pods,
        replicas=1,
        endpoint="http://w.ns.svc.cluster.local:80",
    )


def test_ready_deployment_is_inference_ready() -> None:
    c = infer(deployment(), [pod()])
    assert c == Cond(
        True, REASON_SERVICE_READY, "1/1 Pod(s) ready; serving at http://w.ns.svc.cluster.local:80"
    )


def test_nodes_not_ready_means_inference_not_ready() -> None:
    c = infer(None, [], resource=Cond(False, "Provisioning", "waiting"))
    assert not c.ok
    assert c.reason == REASON_RESOURCE_NOT_READY


@pytest.mark.parametrize(
    ("waiting", "reason", "hint"),
    [
        ("ImagePullBackOff", REASON_IMAGE_PULL, "imagePullSecrets"),
        ("ErrImagePull", REASON_IMAGE_PULL, "check the image name"),
        ("CrashLoopBackOff", REASON_CRASH_LOOP, "kubectl logs -n ns p-1 -c inference --previous"),
    ],
)
def test_failing_pod_turns_inference_false_even_if_the_deployment_looks_ready(
    waiting: str, reason: str, hint: str
) -> None:
    # The Deployment status lags the Pod; the Pod's own state decides.
    c = infer(deployment(), [pod(waiting=waiting)])
    assert not c.ok
    assert c.reason == reason
    assert "Pod p-1: container inference" in c.message
    assert hint in c.message


def test_adapter_init_container_pull_failure_is_reported() -> None:
    c = infer(deployment(ready=0, available=0), [pod(init_waiting="ImagePullBackOff")])
    assert c.reason == REASON_IMAGE_PULL
    assert "init container falcon-7b-adapter" in c.message


def test_unschedulable_for_gpus_is_insufficient_gpu() -> None:
    c = infer(
        deployment(ready=0, available=0),
        [pod(unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")],
    )
    assert c.reason == REASON_INSUFFICIENT_GPU


def test_rollout_after_an_update_is_rolling_out() -> None:
    c = infer(
        deployment(
            generation=2, observed=2, replicas=2, updated=1, ready=1, available=1, revision="2"
        ),
        [pod()],
    )
    assert not c.ok
    assert c.reason == REASON_ROLLING_OUT
    assert "1/1 Pod(s) updated" in c.message


def test_first_start_is_waiting_for_pods() -> None:
    c = infer(deployment(ready=0, available=0), [pod(ready=False)])
    assert not c.ok
    assert c.reason == REASON_PODS_NOT_READY


def test_statefulset_revisions_decide_rollout() -> None:
    sts = {
        "kind": "StatefulSet",
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert infer(sts, []).reason == REASON_ROLLING_OUT
    sts["status"]["currentRevision"] = "b"
    assert infer(sts, []).ok


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = build_status(
        old=None,
        generation=1,
        resource=OK,
        inference=Cond(False, "X", "m"),
        worker_nodes=["n1"],
        now="T1",
    )
    again = build_status(
        old=first,
        generation=1,
        resource=OK,
        inference=Cond(False, "Y", "other"),
        worker_nodes=["n1"],
        now="T2",
    )
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert times == {"ResourceReady": "T1", "InferenceReady": "T1", "WorkspaceSucceeded": "T1"}
    flipped = build_status(
        old=again,
        generation=2,
        resource=OK,
        inference=Cond(True, REASON_SERVICE_READY, "ok"),
        worker_nodes=["n1"],
        now="T3",
    )
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"ResourceReady": "T1", "InferenceReady": "T3", "WorkspaceSucceeded": "T3"}
    assert all(c["observedGeneration"] == 2 for c in flipped["conditions"])
    same = build_status(
        old=flipped,
        generation=2,
        resource=OK,
        inference=Cond(True, REASON_SERVICE_READY, "ok"),
        worker_nodes=["n1"],
        now="T4",
    )
    assert same_status(flipped, same)


def test_events_fire_on_changes_only() -> None:
    start = build_status(
        old=None,
        generation=1,
        resource=Cond(False, "Provisioning", "m"),
        inference=Cond(False, REASON_RESOURCE_NOT_READY, "m"),
        worker_nodes=[],
        now="T",
    )
    assert status_events(None, start) == []
    ready = build_status(
        old=start,
        generation=1,
        resource=OK,
        inference=Cond(True, REASON_SERVICE_READY, "ok"),
        worker_nodes=["n"],
        now="T",
    )
    assert [(e.type, e.reason) for e in status_events(start, ready)] == [
        ("Normal", "NodesReady"),
        ("Normal", "WorkspaceReady"),
    ]
    assert status_events(ready, ready) == []
    crash = build_status(
        old=ready,
        generation=1,
        resource=OK,
        inference=Cond(False, REASON_CRASH_LOOP, "boom"),
        worker_nodes=["n"],
        now="T",
    )
    assert [(e.type, e.reason) for e in status_events(ready, crash)] == [
        ("Warning", REASON_CRASH_LOOP)
    ]
