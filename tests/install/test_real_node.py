"""The whole system on the real node: ``kubectl apply -k manifests/`` with our built controller
image, then a Workspace (transformers runtime, private preset image, adapter image) answering
``/chat`` through its Service's ClusterIP, from real Pods, with exact greedy output; then the same
with a CPU Workspace on the vLLM runtime, served by real vLLM from ``vllm-cpu.Dockerfile``'s image
(the node relabelled as a CPU instance type for that test).

Nothing is mocked: the images are built from ``manifests/images/*.Dockerfile`` by
``tests/images`` and imported into the node's containerd; the apiserver calls the webhook through
its Service with the caBundle the webhook injected; the inference Pod's init container copies the
adapter image's ``/data``. The only test-side change to the install is the controller image's
name (a kustomize ``images:`` override in an overlay, ``realstack.overlay``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.realnode import NODE_NAME, RealCluster
from tests.images import api as images
from tests.install import realstack
from tests.install.realstack import (
    ADAPTER,
    ADAPTER_IMAGE_NAME,
    ADAPTER_LORA,
    ADAPTER_SEED,
    NAMESPACE,
    WORKSPACE,
)

# Cold, the images are built first (the model image about 9 minutes on 2 busy cores) and
# importing the 3.3 GB model image into containerd takes minutes: more than pytest's default.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(3600)]

WS_NAMESPACE = "real-e2e"
PROMPT = "The Kaito controller adds an init container for each adapter"
GREEDY = {"do_sample": False, "max_new_tokens": 12}
READY_TIMEOUT_S = 900.0


def reference(adapter_dir: Path, strength: float) -> str:
    """The tiny model merged here at ``strength`` (the runtime tests' formula), greedy."""
    from runtime.server.loader import load_model
    from tests.runtime.harness import make_settings
    from tests.runtime.test_server_adapters import formula_model, generate
    from tests.support.tiny_model import build_tiny_llama

    base = build_tiny_llama()
    model = formula_model(base, adapter_dir.parent, {adapter_dir.name: strength})
    return generate(model, load_model(make_settings(base)))


@pytest.fixture(scope="module")
def installed(
    real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    controller = images.ensure_image("controller")
    kustom = realstack.install(
        real_cluster, controller.archive, controller.ref, tmp_path_factory.mktemp("install")
    )
    try:
        yield kustom
    finally:
        realstack.uninstall(real_cluster.control_plane, kustom, WS_NAMESPACE)
    # Deleting the Workspaces, then `kubectl delete -k`, leaves nothing of ours.
    assert realstack.installed_leftovers(real_cluster.control_plane) == []


def test_controller_installed_with_leader_election_and_injected_ca_bundle(
    real_cluster: RealCluster, installed: Path
) -> None:
    cp = real_cluster.control_plane
    pods = cp.kubectl_json("get", "pods", "-n", NAMESPACE)["items"]
    assert len(pods) == 2
    assert all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
    leases = cp.kubectl_json("get", "leases", "-n", NAMESPACE)["items"]
    holders = [lease["spec"].get("holderIdentity") or "" for lease in leases]
    names = [p["metadata"]["name"] for p in pods]
    assert any(h.startswith(n) for h in holders for n in names), holders
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for cfg in cp.kubectl_json("get", kind, "-l", "app.kubernetes.io/part-of=kaito-py")[
            "items"
        ]:
            for hook in cfg["webhooks"]:
                bundle = base64.b64decode(hook["clientConfig"].get("caBundle", ""))
                assert b"BEGIN CERTIFICATE" in bundle, (kind, hook["name"])
                assert hook["clientConfig"]["service"]["namespace"] == NAMESPACE


def test_adapter_workspace_answers_through_its_cluster_ip(
    real_cluster: RealCluster, installed: Path
) -> None:
    cp = real_cluster.control_plane
    model = images.ensure_model_image()
    adapter = images.ensure_adapter_image(
        seed=ADAPTER_SEED, name=ADAPTER_IMAGE_NAME, **ADAPTER_LORA
    )
    for image in (model, adapter):
        real_cluster.import_image(image.archive)
    cp.kubectl("create", "namespace", WS_NAMESPACE)
    # The webhook, reached by the apiserver through its Service, admits (and defaults) it.
    ws = realstack.workspace(WS_NAMESPACE, model.ref, adapter.ref, "0.2")
    cp.kubectl("apply", "-f", "-", input=json.dumps(ws))
    realstack.wait_ready(cp, WS_NAMESPACE, WORKSPACE, READY_TIMEOUT_S)
    ip = realstack.cluster_ip(cp, WS_NAMESPACE, WORKSPACE)
    # The seed's body, verbatim, then the exactness check against the merge done here.
    assert "Result" in realstack.post(f"http://{ip}/chat", '{"prompt":"YOUR_PROMPT_HERE"}')
    body = {"prompt": PROMPT, "generate_kwargs": GREEDY}
    answer = realstack.post(f"http://{ip}/chat", body)["Result"]
    adapter_dir = images.tiny_adapter(images.SPECS["test"], ADAPTER_SEED, ADAPTER_LORA)
    assert answer == reference(adapter_dir, 0.2)
    # The init container copied /data: the runtime loaded the adapter from it.
    pods = cp.kubectl_json(
        "get", "pods", "-n", WS_NAMESPACE, "-l", f"kaito.sh/workspace={WORKSPACE}"
    )["items"]
    logs = cp.kubectl(
        "logs", "-n", WS_NAMESPACE, pods[0]["metadata"]["name"], "--all-containers"
    ).stdout
    assert ADAPTER in logs
    # The official openai client through the Service.
    import openai

    client = openai.OpenAI(base_url=f"http://{ip}/v1", api_key="unused")
    served = [m.id for m in client.models.list()]
    done = client.completions.create(model=served[0], prompt=PROMPT, max_tokens=4, temperature=0)
    assert done.choices[0].text


def inference_pods(real_cluster: RealCluster, name: str) -> list[dict[str, Any]]:
    cp = real_cluster.control_plane
    pods: list[dict[str, Any]] = cp.kubectl_json(
        "get", "pods", "-n", WS_NAMESPACE, "-l", f"kaito.sh/workspace={name}"
    )["items"]
    return pods


def test_changing_the_strength_rolls_out_the_new_merge(
    real_cluster: RealCluster, installed: Path
) -> None:
    cp = real_cluster.control_plane
    old = {p["metadata"]["name"] for p in inference_pods(real_cluster, WORKSPACE)}
    assert old, "the Workspace of the previous test is gone"
    patch = [{"op": "replace", "path": "/inference/adapters/0/strength", "value": "0.7"}]
    cp.kubectl(
        "patch", "workspace", "-n", WS_NAMESPACE, WORKSPACE, "--type=json", "-p", json.dumps(patch)
    )

    def rolled() -> bool:
        pods = inference_pods(real_cluster, WORKSPACE)
        names = {p["metadata"]["name"] for p in pods}
        ready = all(
            c["status"] == "True"
            for p in pods
            for c in p.get("status", {}).get("conditions", [])
            if c["type"] == "Ready"
        )
        return bool(names) and not names & old and ready

    realstack.wait_for("the new Pod replaces the old one", rolled, READY_TIMEOUT_S, every=2)
    realstack.wait_ready(cp, WS_NAMESPACE, WORKSPACE, READY_TIMEOUT_S)
    ip = realstack.cluster_ip(cp, WS_NAMESPACE, WORKSPACE)
    body = {"prompt": PROMPT, "generate_kwargs": GREEDY}
    answer = realstack.post(f"http://{ip}/chat", body)["Result"]
    adapter_dir = images.tiny_adapter(images.SPECS["test"], ADAPTER_SEED, ADAPTER_LORA)
    assert answer == reference(adapter_dir, 0.7)
    assert answer != reference(adapter_dir, 0.2)
    cp.kubectl("delete", "workspace", "-n", WS_NAMESPACE, WORKSPACE, "--timeout=180s")


def failing_reason(real_cluster: RealCluster, name: str, reason: str) -> dict[str, Any] | None:
    ws: dict[str, Any] = real_cluster.control_plane.kubectl_json(
        "get", "workspace", "-n", WS_NAMESPACE, name
    )
    cond = realstack.condition(ws, "InferenceReady")
    return cond if cond.get("status") == "False" and cond.get("reason") == reason else None


@pytest.mark.parametrize(
    ("case", "reason"),
    [("missing", "ImagePullBackOff"), ("misfit", "CrashLoopBackOff")],
)
def test_a_bad_adapter_image_gives_the_readme_reason(
    real_cluster: RealCluster, installed: Path, case: str, reason: str
) -> None:
    cp = real_cluster.control_plane
    model = images.ensure_model_image()
    if case == "missing":
        adapter_ref = "kaito.local/no-such-adapter:0.1"  # no registry can serve it
    else:  # made for the larger test model: its matrices do not fit this one
        misfit = images.ensure_adapter_image(spec="medium", seed=2, name="adapter-misfit", r=2)
        real_cluster.import_image(misfit.archive)
        adapter_ref = misfit.ref
    cp.kubectl("create", "namespace", WS_NAMESPACE, check=False)
    ws = realstack.workspace(WS_NAMESPACE, model.ref, adapter_ref, "0.5")
    ws["metadata"]["name"] = name = f"bad-{case}"
    cp.kubectl("apply", "-f", "-", input=json.dumps(ws))
    try:
        cond = realstack.wait_for(
            f"InferenceReady False {reason}",
            lambda: failing_reason(real_cluster, name, reason),
            600,
            every=2,
        )
        assert cond["message"]
    finally:
        cp.kubectl("delete", "workspace", "-n", WS_NAMESPACE, name, "--timeout=180s", check=False)


VLLM_WORKSPACE = "workspace-tinyllama-cpu"
VLLM_CONFIG = "vllm-exact"
# float32: exact against the merge done here (on a CPU with bfloat16, vLLM would compute in it);
# the tiny model holds 512 positions, the preset 2048.
VLLM_CONFIG_YAML = "vllm:\n  dtype: float32\n  max-model-len: 512\n"


def vllm_reference(adapter_dir: Path, strength: float) -> str:
    """``reference`` on the vLLM test model (head_dim 32: vLLM-CPU has no kernels for 16)."""
    from runtime.server.loader import load_model
    from tests.runtime.harness import make_settings
    from tests.runtime.test_server_adapters import formula_model, generate
    from tests.support.tiny_model import VLLM_SPEC, build_tiny_llama

    base = build_tiny_llama(VLLM_SPEC)
    model = formula_model(base, adapter_dir.parent, {adapter_dir.name: strength})
    return generate(model, load_model(make_settings(base))).rstrip("\ufffd")


def test_vllm_cpu_workspace_answers_through_its_cluster_ip(
    real_cluster: RealCluster, installed: Path
) -> None:
    """The same on the vLLM runtime: a CPU Workspace (the node relabelled as a CPU SKU) served
    by real vLLM from ``vllm-cpu.Dockerfile``'s image, the adapter at its strength."""
    cp = real_cluster.control_plane
    model = images.ensure_model_image(spec="vllm", runtime="vllm-cpu")
    adapter = images.ensure_adapter_image(
        spec="vllm", seed=ADAPTER_SEED, name="adapter-e2e-vllm", **ADAPTER_LORA
    )
    for image in (model, adapter):
        real_cluster.import_image(image.archive)
    cp.kubectl("create", "namespace", WS_NAMESPACE, check=False)
    cp.kubectl(
        "create", "configmap", VLLM_CONFIG, "-n", WS_NAMESPACE,
        f"--from-literal=inference_config.yaml={VLLM_CONFIG_YAML}",
    )  # fmt: skip
    ws = realstack.cpu_workspace(
        WS_NAMESPACE, VLLM_WORKSPACE, model.ref, adapter.ref, strength="0.2", config=VLLM_CONFIG
    )
    with realstack.cpu_node(cp):
        cp.kubectl("apply", "-f", "-", input=json.dumps(ws))
        try:
            realstack.wait_ready(cp, WS_NAMESPACE, VLLM_WORKSPACE, READY_TIMEOUT_S)
        except realstack.StackError as exc:
            raise AssertionError(f"{exc}\n{pod_logs(real_cluster, VLLM_WORKSPACE)}") from None
        pods = inference_pods(real_cluster, VLLM_WORKSPACE)
        container = pods[0]["spec"]["containers"][0]
        assert container["image"] == model.ref
        assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("requests", {})
        assert "--device" in container["command"]
        ip = realstack.cluster_ip(cp, WS_NAMESPACE, VLLM_WORKSPACE)
        assert realstack.post(f"http://{ip}/chat", '{"prompt":"YOUR_PROMPT_HERE"}')["Result"]
        body = {"prompt": PROMPT, "generate_kwargs": GREEDY}
        answer = realstack.post(f"http://{ip}/chat", body)["Result"]
        adapter_dir = images.tiny_adapter(images.SPECS["vllm"], ADAPTER_SEED, ADAPTER_LORA)
        assert answer.rstrip("\ufffd") == vllm_reference(adapter_dir, 0.2)
        assert answer.rstrip("\ufffd") != vllm_reference(adapter_dir, 0.0)
        import openai

        client = openai.OpenAI(base_url=f"http://{ip}/v1", api_key="unused")
        served = {m.id for m in client.models.list()}
        assert {realstack.CPU_PRESET, ADAPTER} <= served, served
        cp.kubectl("delete", "workspace", "-n", WS_NAMESPACE, VLLM_WORKSPACE, "--timeout=180s")


def pod_logs(real_cluster: RealCluster, name: str) -> str:
    """The inference Pods' state and last log lines, for a failure message."""
    cp = real_cluster.control_plane
    out = [cp.kubectl("get", "pods", "-n", WS_NAMESPACE, "-o", "wide", check=False).stdout]
    for pod in inference_pods(real_cluster, name):
        logs = cp.kubectl(
            "logs", "-n", WS_NAMESPACE, pod["metadata"]["name"], "--all-containers",
            "--tail=40", check=False,
        )  # fmt: skip
        out.append(logs.stdout + logs.stderr)
    return "\n".join(out)
