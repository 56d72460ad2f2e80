"""The rendered NodeClaims and workloads of the examples match their golden files."""

from __future__ import annotations

import json

import pytest

from tests.reconciler import examples, goldens
from tests.support.goldens import assert_golden


@pytest.mark.parametrize("name", list(examples.ALL))
def test_render_matches_golden(name: str) -> None:
    assert_golden(goldens.path(name), goldens.dump(goldens.case(name)))


def test_seed_examples_have_the_documented_shape() -> None:
    vllm = json.loads(goldens.path("falcon-vllm").read_text())
    transformers = json.loads(goldens.path("falcon-transformers").read_text())
    adapters = json.loads(goldens.path("falcon-adapters").read_text())
    for case in (vllm, transformers, adapters):
        kinds = [o["kind"] for o in case["workload"]]
        assert kinds == ["Service", "Deployment"]
        svc = case["workload"][0]
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"][0]["port"] == 80
        assert svc["spec"]["ports"][0]["targetPort"] == 5000
        assert len(case["nodeclaims"]) == 1
    assert vllm["workload"][1]["spec"]["template"]["spec"]["containers"][0]["command"][2] == (
        "runtime.vllm"
    )
    tcmd = transformers["workload"][1]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert tcmd[2] == "runtime.server"
    # transformers spreads falcon-7b over both V100s of Standard_NC12s_v3
    res = transformers["workload"][1]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    pod = adapters["workload"][1]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["falcon-7b-adapter"]
    assert pod["initContainers"][0]["image"] == examples.ADAPTER_IMAGE
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--adapter") + 1] == "falcon-7b-adapter=0.2"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"dshm": "/dev/shm", "adapters": "/mnt/adapter"}
    assert pod["initContainers"][0]["volumeMounts"] == [
        {"name": "adapters", "mountPath": "/mnt/adapter"}
    ]


def test_multi_node_preset_gets_statefulset_and_headless_service() -> None:
    case = json.loads(goldens.path("llama-multinode").read_text())
    kinds = [(o["kind"], o["metadata"]["name"]) for o in case["workload"]]
    assert kinds == [
        ("Service", "workspace-llama-2-13b-headless"),
        ("Service", "workspace-llama-2-13b"),
        ("StatefulSet", "workspace-llama-2-13b"),
    ]
    assert case["workload"][0]["spec"]["clusterIP"] == "None"
    sts = case["workload"][2]["spec"]
    assert sts["replicas"] == 2
    assert sts["serviceName"] == "workspace-llama-2-13b-headless"
    assert len(case["nodeclaims"]) == 2


def test_preferred_nodes_need_no_nodeclaim() -> None:
    case = json.loads(goldens.path("phi-preferred").read_text())
    assert case["nodeclaims"] == []
    assert case["second_plan"]["selected"] == ["gpu-a"]


@pytest.mark.parametrize(
    ("name", "model_flag"),
    [("falcon-private-transformers", "--model"), ("falcon-private-vllm", "--model-dir")],
)
def test_private_preset_images_are_served_offline_from_their_weights(
    name: str, model_flag: str
) -> None:
    """The private preset image convention: the image itself runs, pointed at
    /workspace/weights, offline (no --allow-download, no revision, HF_HUB_OFFLINE=1)."""
    case = json.loads(goldens.path(name).read_text())
    pod = case["workload"][-1]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == examples.PRIVATE_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    cmd = container["command"]
    assert cmd[cmd.index(model_flag) + 1] == "/workspace/weights"
    assert "--allow-download" not in cmd
    assert "--revision" not in cmd
    assert "tiiuae/falcon-7b" not in cmd
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_public_presets_download_the_pinned_revision() -> None:
    case = json.loads(goldens.path("falcon-transformers").read_text())
    container = case["workload"][-1]["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert cmd[cmd.index("--model") + 1] == "tiiuae/falcon-7b"
    assert "--allow-download" in cmd
    assert "--revision" in cmd
    assert "env" not in container
