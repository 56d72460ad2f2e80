"""The seed's examples and the other paths, end to end on the real control plane.

A ``python -m reconciler`` process watches the test's namespace; the fake cloud turns its
NodeClaims into KWOK GPU nodes; kube-controller-manager, the scheduler and KWOK run the Pods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    StartReconciler,
    apply,
    claims_of,
    events,
    get,
    items,
    launched_claim,
    settle,
    wait_condition,
    wait_ready,
)
from tests.support.fake_cloud import FakeCloud
from tests.support.procs import wait_until

NAME = "workspace-falcon-7b"


def _pod_spec(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    dep = get(cp, "deployment", namespace, name)
    assert dep is not None
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("example", list(examples.SEEDS))
def test_seed_example_becomes_ready(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc, example: str
) -> None:
    apply(crds, namespace, examples.SEEDS[example])
    ws = wait_ready(crds, namespace, NAME)

    claim = launched_claim(crds, namespace, NAME)
    itype = "Standard_NC6s_v3" if example == "falcon-vllm" else "Standard_NC12s_v3"
    assert claim["spec"]["requirements"][0] == {
        "key": "node.kubernetes.io/instance-type",
        "operator": "In",
        "values": [itype],
    }
    assert claim["metadata"]["labels"]["apps"] == "falcon-7b"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in claim["spec"]["taints"]
    assert ws["status"]["workerNodes"] == [claim["status"]["nodeName"]]
    assert ws["metadata"]["finalizers"] == ["kaito.sh/nodeclaims"]
    for cond in ws["status"]["conditions"]:
        assert cond["observedGeneration"] == ws["metadata"]["generation"]

    spec = _pod_spec(crds, namespace, NAME)
    container = spec["containers"][0]
    runtime = "runtime.server" if example == "falcon-transformers" else "runtime.vllm"
    assert container["command"][:3] == ["python", "-m", runtime]
    assert container["ports"][0]["containerPort"] == 5000
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    if example == "falcon-adapters":
        assert [c["name"] for c in spec["initContainers"]] == ["falcon-7b-adapter"]
        assert spec["initContainers"][0]["image"] == examples.ADAPTER_IMAGE
        assert "falcon-7b-adapter=0.2" in container["command"]
    else:
        assert "initContainers" not in spec

    svc = get(crds, "service", namespace, NAME)
    assert svc is not None
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 5000)]
    pods = items(crds, "pods", namespace, f"kaito.sh/workspace={NAME}")
    assert [p["spec"]["nodeName"] for p in pods] == ws["status"]["workerNodes"]

    reasons = [r for _, r, _ in events(crds, namespace, NAME)]
    for want in ("NodeClaimCreated", "WorkloadCreated", "WorkspaceReady"):
        assert want in reasons


def test_idle_workspace_causes_no_writes_and_constant_reads(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    apply(crds, namespace, examples.SEED_ADAPTERS)
    wait_ready(crds, namespace, NAME)
    settle(2)
    writes = reconciler.total("kaito_reconciler_writes_total")
    before = reconciler.metrics()
    settle(7)  # two relists at 3 s
    after = reconciler.metrics()
    assert reconciler.total("kaito_reconciler_writes_total") == writes

    def requests(m: dict[str, float], verb: str) -> float:
        """Requests of a verb, leader election (the Lease, renewed every 0.3 s) aside."""
        return sum(
            v
            for k, v in m.items()
            if k.startswith("kaito_reconciler_api_requests_total")
            and f'verb="{verb}"' in k
            and 'resource="leases.coordination.k8s.io"' not in k
        )

    for verb in ("apply", "apply/status", "create", "delete", "get", "patch", "update"):
        assert requests(after, verb) == requests(before, verb), verb
    lists = requests(after, "list") - requests(before, "list")
    # 9 informers, one LIST per 3 s relist each: at most 3 rounds in 7 s, whatever the count.
    assert 9 <= lists <= 27


def test_preferred_nodes_are_used_and_no_nodeclaim_is_made(
    crds: ControlPlane,
    namespace: str,
    reconciler: ReconcilerProc,
    gpu_nodes: Callable[..., dict[str, Any]],
) -> None:
    names = [f"gpu-a-{namespace}", f"gpu-b-{namespace}"]
    for n in names:
        gpu_nodes(n, "on-prem-v100", gpus=1, labels={"apps": "phi-2"})
    manifest = examples.load(examples.PREFERRED, namespace=namespace)
    for key in ("uid", "generation"):
        del manifest["metadata"][key]
    manifest["resource"]["preferredNodes"] = names
    apply(crds, namespace, manifest)
    ws = wait_ready(crds, namespace, "workspace-phi-2")
    assert claims_of(crds, namespace, "workspace-phi-2") == []
    assert ws["status"]["workerNodes"] == [names[0]]
    assert "finalizers" not in ws["metadata"]
    pods = items(crds, "pods", namespace, "kaito.sh/workspace=workspace-phi-2")
    assert [p["spec"]["nodeName"] for p in pods] == [names[0]]
    term = _pod_spec(crds, namespace, "workspace-phi-2")["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]
    assert term["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": [names[0]]}]
    crds.kubectl("delete", "workspace", "-n", namespace, "workspace-phi-2", "--timeout=30s")


def test_multi_node_preset_gets_a_statefulset_and_headless_service(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    apply(crds, namespace, examples.MULTI_NODE)
    name = "workspace-llama-2-13b"
    ws = wait_ready(crds, namespace, name, timeout=90)
    assert len(claims_of(crds, namespace, name)) == 2
    assert len(ws["status"]["workerNodes"]) == 2
    sts = get(crds, "statefulset", namespace, name)
    assert sts is not None
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == f"{name}-headless"
    assert get(crds, "deployment", namespace, name) is None
    headless = get(crds, "service", namespace, f"{name}-headless")
    assert headless is not None
    assert headless["spec"]["clusterIP"] == "None"
    svc = get(crds, "service", namespace, name)
    assert svc is not None
    assert svc["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    pods = items(crds, "pods", namespace, f"kaito.sh/workspace={name}")
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(ws["status"]["workerNodes"])
    cmd = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--node-count") + 1] == "2"
    assert cmd[cmd.index("--headless-service") + 1] == f"{name}-headless"
    env = {e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"POD_INDEX", "POD_NAME", "POD_NAMESPACE"} <= env


def test_template_workspace_serves_the_users_pod(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    apply(crds, namespace, examples.TEMPLATE)
    wait_ready(crds, namespace, "workspace-custom")
    spec = _pod_spec(crds, namespace, "workspace-custom")
    assert spec["containers"][0]["image"] == "registry.example.com/custom-llm:1.0"
    svc = get(crds, "service", namespace, "workspace-custom")
    assert svc is not None
    assert svc["spec"]["ports"][0]["targetPort"] == 8080


def test_model_too_big_for_the_instance_type_reports_nofit(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    apply(crds, namespace, examples.SEED_FALCON.replace('falcon-7b"', 'mistral-7b"'))
    ws = wait_condition(crds, namespace, NAME, "ResourceReady", "False", reason="NoFit")
    msg = next(c["message"] for c in ws["status"]["conditions"] if c["type"] == "ResourceReady")
    assert "mistral-7b needs 13.5 GiB of weights" in msg
    assert claims_of(crds, namespace, NAME) == []
    assert ("Warning", "NoFit") in [(t, r) for t, r, _ in events(crds, namespace, NAME)]


def test_cloud_failure_is_reported_and_recovers(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, cloud: FakeCloud
) -> None:
    cloud.fail("Standard_NC6s_v3", "InsufficientCapacity")
    start_reconciler()
    apply(crds, namespace, examples.SEED_FALCON)
    ws = wait_condition(
        crds, namespace, NAME, "ResourceReady", "False", reason="ProvisioningFailed"
    )
    msg = next(c["message"] for c in ws["status"]["conditions"] if c["type"] == "ResourceReady")
    assert "failed to launch: InsufficientCapacity" in msg
    # Karpenter deletes a claim that cannot launch; the reconciler makes a new one.
    cloud.heal("Standard_NC6s_v3")
    (claim,) = claims_of(crds, namespace, NAME)
    crds.kubectl("delete", "nodeclaim", claim["metadata"]["name"], "--timeout=30s")
    wait_ready(crds, namespace, NAME)
    names = [c["metadata"]["name"] for c in claims_of(crds, namespace, NAME)]
    assert len(names) == 1
    assert names != [claim["metadata"]["name"]]


def test_slow_cloud_shows_provisioning_then_ready(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, cloud: FakeCloud
) -> None:
    cloud.slow(3)
    start_reconciler()
    apply(crds, namespace, examples.SEED_FALCON)
    ws = wait_condition(crds, namespace, NAME, "ResourceReady", "False", reason="Provisioning")
    assert {c["type"]: c["reason"] for c in ws["status"]["conditions"]}[
        "InferenceReady"
    ] == "ResourceNotReady"
    assert get(crds, "deployment", namespace, NAME) is None
    wait_until(lambda: get(crds, "deployment", namespace, NAME), 30, "the deployment")
    wait_ready(crds, namespace, NAME)


def test_admin_configmap_sets_the_runtime_image(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    image = "registry.example.com/kaito/vllm:2.0"
    crds.kubectl(
        "create", "configmap", "kaito-config", "-n", namespace, f"--from-literal=vllmImage={image}"
    )
    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, NAME)
    assert _pod_spec(crds, namespace, NAME)["containers"][0]["image"] == image
    # A new image in the ConfigMap rolls the workload out.
    newer = "registry.example.com/kaito/vllm:2.1"
    crds.kubectl(
        "patch",
        "configmap",
        "kaito-config",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        f'{{"data": {{"vllmImage": "{newer}"}}}}',
    )
    wait_until(
        lambda: _pod_spec(crds, namespace, NAME)["containers"][0]["image"] == newer,
        30,
        "the new image",
    )
    wait_ready(crds, namespace, NAME)
