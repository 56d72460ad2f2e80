"""CPU Workspaces end to end on the real control plane: a CPU-capable preset on a CPU instance
type gets a NodeClaim without the GPU taint or ``nvidia.com/gpu``, the fake cloud brings up a
CPU-only KWOK node, and the Pod (no GPU request, ``--device cpu``) is scheduled there."""

from __future__ import annotations

from typing import Any

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    apply,
    claims_of,
    get,
    items,
    launched_claim,
    wait_condition,
    wait_ready,
)
from tests.support.procs import wait_until

GPU = "nvidia.com/gpu"


def _container(cp: ControlPlane, namespace: str, name: str) -> tuple[dict[str, Any], Any]:
    dep = get(cp, "deployment", namespace, name)
    assert dep is not None
    spec = dep["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def test_a_cpu_workspace_runs_on_a_cpu_node_without_gpus(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    image = "registry.example.com/kaito/vllm-cpu:9.9"
    crds.kubectl(
        "create", "configmap", "kaito-config", "-n", namespace,
        f"--from-literal=vllmCpuImage={image}",
    )  # fmt: skip
    name = "workspace-qwen-cpu"
    apply(crds, namespace, examples.CPU_VLLM)
    ws = wait_ready(crds, namespace, name)

    claim = launched_claim(crds, namespace, name)
    assert claim["spec"]["requirements"][0]["values"] == ["Standard_D8s_v5"]
    assert "taints" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"] == {"memory": "16Gi"}
    node = get(crds, "node", None, claim["status"]["nodeName"])
    assert node is not None
    assert GPU not in node["status"]["allocatable"]
    assert ws["status"]["workerNodes"] == [node["metadata"]["name"]]

    spec, container = _container(crds, namespace, name)
    assert "tolerations" not in spec
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "16Gi"}}
    assert container["image"] == image
    cmd = container["command"]
    assert cmd[:3] == ["python", "-m", "runtime.vllm"]
    assert cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--cpu-kv-cache-gib") + 1] == "12"
    pods = items(crds, "pods", namespace, f"kaito.sh/workspace={name}")
    assert [p["spec"]["nodeName"] for p in pods] == ws["status"]["workerNodes"]

    # A new vllmCpuImage rolls the workload out by recreating the Pod (node memory is not
    # tracked, so a surge Pod might never fit beside the old one).
    newer = "registry.example.com/kaito/vllm-cpu:9.10"
    crds.kubectl(
        "patch", "configmap", "kaito-config", "-n", namespace, "--type=merge",
        "-p", f'{{"data": {{"vllmCpuImage": "{newer}"}}}}',
    )  # fmt: skip
    wait_until(lambda: _container(crds, namespace, name)[1]["image"] == newer, 30, "the new image")
    dep = get(crds, "deployment", namespace, name)
    assert dep is not None
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    wait_ready(crds, namespace, name)


def test_transformers_by_annotation_and_two_replicas_on_two_cpu_nodes(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    name = "workspace-smollm-cpu"
    apply(crds, namespace, examples.CPU_TRANSFORMERS)
    ws = wait_ready(crds, namespace, name)
    assert len(claims_of(crds, namespace, name)) == 2
    assert len(ws["status"]["workerNodes"]) == 2
    _, container = _container(crds, namespace, name)
    assert GPU not in container["resources"]["requests"]
    cmd = container["command"]
    assert cmd[:3] == ["python", "-m", "runtime.server"]
    assert cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert container["image"] == "ghcr.io/kaito-py/transformers:0.1.0"  # the built-in default


def test_a_gpu_preset_on_a_cpu_instance_type_is_an_invalid_spec(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    """Without the webhook (it refuses this first), the reconciler's spec check gives the
    webhook's message and makes no claim."""
    apply(crds, namespace, examples.SEED_FALCON.replace("Standard_NC6s_v3", "Standard_D8s_v5"))
    name = "workspace-falcon-7b"
    ws = wait_condition(crds, namespace, name, "WorkspaceSucceeded", "False", reason="InvalidSpec")
    msg = next(
        c["message"] for c in ws["status"]["conditions"] if c["type"] == "WorkspaceSucceeded"
    )
    assert "resource.instanceType: is a CPU-only instance type (Standard_D8s_v5" in msg
    assert "fix: use a CPU-capable preset on it (qwen2.5-0.5b-instruct" in msg
    assert claims_of(crds, namespace, name) == []
