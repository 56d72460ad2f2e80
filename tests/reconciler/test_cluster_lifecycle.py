"""Updates, failures and deletion, end to end on the real control plane."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    StartReconciler,
    apply,
    claims_of,
    conditions,
    events,
    get,
    items,
    wait_condition,
    wait_ready,
)
from tests.support.fake_cloud import FakeCloud
from tests.support.procs import wait_until

NAME = "workspace-falcon-7b"


def _patch_ws(
    cp: ControlPlane, namespace: str, ops: list[dict[str, Any]], name: str = NAME
) -> None:
    cp.kubectl("patch", "workspace", name, "-n", namespace, "--type=json", "-p", json.dumps(ops))


def _rolled_out(
    cp: ControlPlane, namespace: str, generation: int, name: str = NAME
) -> dict[str, Any]:
    """The Workspace once it is Ready for ``generation`` with one Pod of the new template."""

    def done() -> dict[str, Any] | None:
        ws = get(cp, "workspace", namespace, name)
        assert ws is not None
        conds = ws["status"]["conditions"]
        if not all(c["status"] == "True" and c["observedGeneration"] == generation for c in conds):
            return None
        pods = items(cp, "pods", namespace, f"kaito.sh/workspace={name}")
        if len([p for p in pods if not p["metadata"].get("deletionTimestamp")]) != 1:
            return None
        return ws

    result: dict[str, Any] = wait_until(done, 60, f"generation {generation} rolled out")
    return result


def _command(cp: ControlPlane, namespace: str, name: str = NAME) -> list[str]:
    dep = get(cp, "deployment", namespace, name)
    assert dep is not None
    cmd: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    return cmd


def test_adapter_change_surges_when_the_node_has_a_free_gpu(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    # phi-3-medium (40 heads, 10 KV heads) runs with tensor parallelism 2 on two of the four
    # A100s of Standard_NC96ads_A100_v4: a second Pod fits beside the first.
    name = "workspace-phi-3-medium"
    apply(crds, namespace, examples.SURGE)
    wait_ready(crds, namespace, name)
    old_pods = {
        p["metadata"]["name"] for p in items(crds, "pods", namespace, f"kaito.sh/workspace={name}")
    }
    _patch_ws(
        crds,
        namespace,
        [{"op": "replace", "path": "/inference/adapters/0/strength", "value": "0.5"}],
        name,
    )
    ws = _rolled_out(crds, namespace, 2, name)
    assert "phi-3-adapter=0.5" in _command(crds, namespace, name)
    dep = get(crds, "deployment", namespace, name)
    assert dep is not None
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    updated = [m for t, r, m in events(crds, namespace, name) if r == "WorkloadUpdated"]
    assert len(updated) == 1
    assert "a new Pod starts beside the old one" in updated[0]
    pods = items(crds, "pods", namespace, f"kaito.sh/workspace={name}")
    live = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    assert live.isdisjoint(old_pods)
    assert conditions(ws)["InferenceReady"] == ("True", "ServiceReady")


def test_adding_an_adapter_recreates_the_pod_when_the_node_is_full(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    # falcon-7b fills the single V100 of Standard_NC6s_v3: no room for a second Pod.
    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, NAME)
    _patch_ws(
        crds,
        namespace,
        [
            {
                "op": "add",
                "path": "/inference/adapters",
                "value": [
                    {
                        "source": {"name": "falcon-7b-adapter", "image": examples.ADAPTER_IMAGE},
                        "strength": "0.2",
                    }
                ],
            }
        ],
    )
    _rolled_out(crds, namespace, 2)
    dep = get(crds, "deployment", namespace, NAME)
    assert dep is not None
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    spec = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["falcon-7b-adapter"]
    assert "falcon-7b-adapter=0.2" in spec["containers"][0]["command"]
    updated = [m for t, r, m in events(crds, namespace, NAME) if r == "WorkloadUpdated"]
    assert len(updated) == 1
    assert "the update recreates the Pod" in updated[0]
    # Removing the adapter again removes the init container and the volume.
    _patch_ws(crds, namespace, [{"op": "remove", "path": "/inference/adapters"}])
    _rolled_out(crds, namespace, 3)
    dep = get(crds, "deployment", namespace, NAME)
    assert dep is not None
    assert "initContainers" not in dep["spec"]["template"]["spec"]
    assert "--adapter" not in _command(crds, namespace)


def _fail_pod(cp: ControlPlane, namespace: str, how: str) -> str:
    pods = items(cp, "pods", namespace, f"kaito.sh/workspace={NAME}")
    assert len(pods) == 1
    pod = pods[0]
    name = pod["metadata"]["name"]
    not_ready = [
        {"type": "Initialized", "status": "True" if how == "crash" else "False"},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
        {"type": "PodScheduled", "status": "True"},
    ]
    main = {
        "name": "inference",
        "image": pod["spec"]["containers"][0]["image"],
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": {"reason": "PodInitializing"}},
    }
    status: dict[str, Any] = {"conditions": not_ready}
    if how == "crash":
        main.update(
            restartCount=5,
            state={
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 5m0s restarting failed container=inference",
                }
            },
            lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
        )
        status["containerStatuses"] = [main]
    else:
        init = pod["spec"]["initContainers"][0]
        status.update(
            phase="Pending",
            containerStatuses=[main],
            initContainerStatuses=[
                {
                    "name": init["name"],
                    "image": init["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{init["image"]}"',
                        }
                    },
                }
            ],
        )
    cp.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    return str(name)


FAILURES = {
    "crash": (examples.SEED_FALCON, "CrashLoopBackOff", "--previous"),
    "pull": (examples.SEED_ADAPTERS, "ImagePullBackOff", "imagePullSecrets"),
}


@pytest.mark.parametrize("how", list(FAILURES))
def test_failing_pod_turns_inference_ready_false(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc, how: str
) -> None:
    manifest, reason, hint = FAILURES[how]
    apply(crds, namespace, manifest)
    wait_ready(crds, namespace, NAME)
    pod = _fail_pod(crds, namespace, how)
    ws = wait_condition(crds, namespace, NAME, "InferenceReady", "False", reason=reason, timeout=30)
    conds = {c["type"]: c for c in ws["status"]["conditions"]}
    assert pod in conds["InferenceReady"]["message"]
    assert hint in conds["InferenceReady"]["message"]
    assert conds["WorkspaceSucceeded"]["status"] == "False"
    assert conds["WorkspaceSucceeded"]["reason"] == reason
    assert conds["ResourceReady"]["status"] == "True"
    assert ("Warning", reason) in [(t, r) for t, r, _ in events(crds, namespace, NAME)]
    # The Pod is replaced (as a crashed Pod would eventually be): Ready again.
    crds.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")
    wait_ready(crds, namespace, NAME)


def test_delete_removes_everything(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    apply(crds, namespace, examples.SEED_ADAPTERS)
    ws = wait_ready(crds, namespace, NAME)
    (claim,) = claims_of(crds, namespace, NAME)
    node = ws["status"]["workerNodes"][0]
    crds.kubectl("delete", "workspace", NAME, "-n", namespace, "--timeout=60s", timeout=70)
    assert get(crds, "workspace", namespace, NAME) is None
    assert claims_of(crds, namespace, NAME) == []
    assert get(crds, "nodeclaim", None, claim["metadata"]["name"]) is None
    wait_until(lambda: get(crds, "node", None, node) is None, 30, f"node {node} to go")
    for kind in ("deployment", "service"):
        wait_until(
            lambda kind=kind: get(crds, kind, namespace, NAME) is None,
            60,
            f"{kind} to be garbage collected",
        )
    wait_until(
        lambda: not items(crds, "pods", namespace, f"kaito.sh/workspace={NAME}"), 60, "pods to go"
    )


def test_delete_while_provisioning_leaks_no_nodeclaim(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, cloud: FakeCloud
) -> None:
    cloud.slow(2)
    start_reconciler()
    apply(crds, namespace, examples.MULTI_NODE)
    name = "workspace-llama-2-13b"
    wait_until(lambda: len(claims_of(crds, namespace, name)) == 2, 30, "two NodeClaims")
    crds.kubectl("delete", "workspace", name, "-n", namespace, "--timeout=60s", timeout=70)
    assert claims_of(crds, namespace, name) == []
    assert not items(
        crds, "nodes", None, f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}"
    )
