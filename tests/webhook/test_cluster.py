"""The webhook registered with a real kube-apiserver (by URL on 127.0.0.1, with its caBundle),
driven with kubectl."""

from __future__ import annotations

import concurrent.futures
import copy
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.api import seed
from tests.api.cases import CASES
from tests.cluster.harness import ControlPlane
from tests.cluster.nodes import create_fake_gpu_node
from tests.support.procs import wait_until
from tests.webhook.cluster_support import apply, install_crds, registered, webhook_in_force
from tests.webhook.support import RunningWebhook, make_pki, serving_pem
from webhook.config_watch import ApiConfigSource
from webhook.kube import Kube
from webhook.settings import Settings

DENIED = 'admission webhook "validate.workspaces.kaito.sh" denied the request'
CONFIG_NAME = "kaito-config"


@pytest.fixture(scope="module")
def admin_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"kaito-admin-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def live(
    control_plane: ControlPlane, admin_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningWebhook]:
    cp = control_plane
    install_crds(cp)
    pki = make_pki(tmp_path_factory.mktemp("webhook-pki"))
    settings = Settings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        kubeconfig=cp.kubeconfig,
        config_namespace=admin_namespace,
        config_name=CONFIG_NAME,
        config_poll_seconds=0.1,
        tls_reload_seconds=0.05,
    )
    hook = RunningWebhook(
        pki,
        settings=settings,
        kube_factory=lambda: Kube.connect(cp.kubeconfig),
        source_factory=lambda kube: (
            ApiConfigSource(kube, admin_namespace, CONFIG_NAME) if kube else None
        ),
    )
    name = f"kaito-test-{uuid.uuid4().hex[:6]}"
    with hook:
        wait_until(lambda: hook.request("GET", "/readyz")[0] == 200)
        kube = hook.deps.kube
        assert kube is not None
        with registered(hook._run, kube, name=name, port=hook.port, ca=pki.ca_pem):
            wait_until(lambda: webhook_in_force(cp, "default", seed.FALCON_7B_ADAPTERS), 60)
            yield hook


def _get(cp: ControlPlane, namespace: str, name: str = "workspace-falcon-7b") -> dict[str, Any]:
    out: dict[str, Any] = cp.kubectl_json("get", "workspace", name, "-n", namespace)
    return out


def _delete(cp: ControlPlane, namespace: str, name: str = "workspace-falcon-7b") -> None:
    cp.kubectl("delete", "workspace", name, "-n", namespace, "--wait=true")


def test_seed_examples_apply_and_store_the_defaulted_runtime(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    out = apply(cp, seed.FALCON_7B, namespace)
    assert out.returncode == 0, out.stderr
    ws = _get(cp, namespace)
    assert ws["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"
    table = cp.kubectl("get", "wk", "-n", namespace).stdout
    assert "Standard_NC6s_v3" in table
    assert "falcon-7b" in table
    _delete(cp, namespace)

    out = apply(cp, seed.FALCON_7B_TRANSFORMERS, namespace)
    assert out.returncode == 0, out.stderr
    assert _get(cp, namespace)["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
    _delete(cp, namespace)

    out = apply(cp, seed.FALCON_7B_ADAPTERS, namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert "inference.adapters[0].source.image: is the documentation's placeholder" in out.stderr
    assert "fix: replace <YOUR_IMAGE> with your adapter image" in out.stderr

    out = apply(cp, seed.FALCON_7B_ADAPTERS_FILLED, namespace)
    assert out.returncode == 0, out.stderr
    ws = _get(cp, namespace)
    assert ws["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"
    assert ws["inference"]["adapters"] == [
        {"source": {"name": "falcon-7b-adapter", "image": seed.ADAPTER_IMAGE}, "strength": "0.2"}
    ]


def test_bad_workspaces_are_refused_by_kubectl_with_the_expected_message(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    assert len(CASES) >= 30
    failures = []
    for case in CASES:
        out = apply(control_plane, case.build(), namespace)
        want = case.kubectl if case.layer == "schema" else case.expect
        assert want is not None
        ok = out.returncode != 0 and want in out.stderr
        if case.layer == "webhook":
            ok = ok and DENIED in out.stderr
        if not ok:
            failures.append(f"{case.id}: rc={out.returncode}\n  want: {want}\n  got: {out.stderr}")
    assert not failures, "\n".join(failures)
    assert control_plane.kubectl("get", "workspaces", "-n", namespace, "-o", "name").stdout == ""


def test_kubectl_explain_documents_the_fields(
    live: RunningWebhook, control_plane: ControlPlane
) -> None:
    out = control_plane.kubectl("explain", "workspace.inference.adapters").stdout
    assert "strength" in out
    assert 'a decimal string from "0" to "1"' in out
    out = control_plane.kubectl("explain", "workspace.resource").stdout
    assert "preferredNodes" in out
    assert "instanceType" in out


def test_updates_may_change_adapters_but_not_the_model_or_the_instance_type(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    assert apply(cp, seed.FALCON_7B_ADAPTERS_FILLED, namespace).returncode == 0

    def patch(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(
            "patch", "workspace", "workspace-falcon-7b", "-n", namespace, "--type=merge",
            "-p", json.dumps(body), check=False,
        )  # fmt: skip

    out = patch({"inference": {"preset": {"name": "phi-2"}}})
    assert out.returncode != 0
    assert 'inference.preset.name: is immutable (was "falcon-7b")' in out.stderr
    out = patch({"resource": {"instanceType": "Standard_NC24s_v3"}})
    assert 'resource.instanceType: is immutable (was "Standard_NC12s_v3")' in out.stderr
    out = patch({"resource": {"labelSelector": {"matchLabels": {"apps": "other"}}}})
    assert "resource.labelSelector: is immutable" in out.stderr

    adapters = [
        {"source": {"name": "falcon-7b-adapter", "image": seed.ADAPTER_IMAGE}, "strength": "0.7"},
        {"source": {"name": "second", "image": seed.ADAPTER_IMAGE}},
    ]
    out = patch({"inference": {"adapters": adapters}})
    assert out.returncode == 0, out.stderr
    stored = _get(cp, namespace)["inference"]["adapters"]
    assert [a["strength"] for a in stored] == ["0.7", "1.0"]  # defaulted on update too
    out = patch({"inference": {"adapters": [{"source": {"name": "x", "image": "<IMG>"}}]}})
    assert "inference.adapters[0].source.image: is the documentation's placeholder" in out.stderr


def test_admin_defaults_reload_without_restart_and_survive_a_bad_version(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str, admin_namespace: str
) -> None:
    cp = control_plane
    state = live.deps.state

    def put(data: dict[str, str]) -> int:
        before = state.generation
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG_NAME, "namespace": admin_namespace},
            "data": data,
        }
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(cm))
        return before

    try:
        before = put({"defaultRuntime": "transformers", "maxAdapters": "1"})
        wait_until(lambda: state.generation > before)
        assert apply(cp, seed.FALCON_7B, namespace).returncode == 0
        assert _get(cp, namespace)["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"

        two = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
        two["metadata"]["name"] = "two-adapters"
        two["inference"]["adapters"].append(
            {"source": {"name": "b", "image": seed.ADAPTER_IMAGE}, "strength": "0.1"}
        )
        out = apply(cp, two, namespace)
        assert "inference.adapters: lists 2 adapters, more than the 1 allowed" in out.stderr

        errors = live.metric("kaito_webhook_config_reloads_total", {"result": "error"})
        put({"defaultRuntime": "tgi", "maxAdapters": "1"})
        wait_until(
            lambda: live.metric("kaito_webhook_config_reloads_total", {"result": "error"}) > errors
        )
        assert live.metric("kaito_webhook_config_ok") == 0
        assert state.last_error is not None
        assert "defaultRuntime: 'tgi' is not a runtime" in state.last_error
        other = seed.load(seed.FALCON_7B)
        other["metadata"]["name"] = "after-bad-config"
        assert apply(cp, other, namespace).returncode == 0
        stored = _get(cp, namespace, "after-bad-config")
        assert stored["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
        assert live.request("GET", "/readyz")[0] == 200
    finally:
        before = state.generation
        cp.kubectl("delete", "configmap", CONFIG_NAME, "-n", admin_namespace, check=False)
        wait_until(lambda: state.generation > before and state.version == "<missing>")
    fresh = seed.load(seed.FALCON_7B)
    fresh["metadata"]["name"] = "after-delete"
    assert apply(cp, fresh, namespace).returncode == 0
    assert (
        _get(cp, namespace, "after-delete")["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"
    )


def test_preferred_nodes_must_exist_carry_the_labels_and_report_gpus(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    names = {k: f"{namespace}-{k}" for k in ("good", "wrong", "nogpu")}
    create_fake_gpu_node(cp, names["good"], "Standard_NC6s_v3", labels={"apps": "falcon-7b"})
    create_fake_gpu_node(cp, names["wrong"], "Standard_NC6s_v3", labels={"apps": "other"})
    create_fake_gpu_node(
        cp, names["nogpu"], "Standard_NC6s_v3", gpus=0, labels={"apps": "falcon-7b"}
    )
    try:
        obj = seed.load(seed.FALCON_7B)
        del obj["resource"]["instanceType"]
        obj["resource"]["preferredNodes"] = [names["good"]]
        out = apply(cp, obj, namespace)
        assert out.returncode == 0, out.stderr

        bad = copy.deepcopy(obj)
        bad["metadata"]["name"] = "prepared-bad"
        bad["resource"]["preferredNodes"] = [
            names["good"], names["wrong"], names["nogpu"], f"{namespace}-absent",
        ]  # fmt: skip
        out = apply(cp, bad, namespace)
        assert out.returncode != 0
        assert "3 problems:" in out.stderr
        assert f"fix: kubectl label node {names['wrong']} apps=falcon-7b" in out.stderr
        assert (
            f"node {names['nogpu']} reports no nvidia.com/gpu in status.allocatable" in out.stderr
        )
        assert "resource.preferredNodes[3]: names a node that does not exist" in out.stderr
        assert live.metric("kaito_webhook_node_lookups_total", {"result": "missing"}) >= 1
    finally:
        cp.kubectl("delete", "node", *names.values(), "--wait=false", check=False)


def test_certificate_rotation_while_creates_run(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    api = client.CustomObjectsApi(control_plane.api_client())
    pki = live.pki
    reloads = live.metric("kaito_webhook_tls_reloads_total", {"result": "ok"})
    handshakes: list[object] = []
    live.reloader.ctx.sni_callback = lambda sock, name, ctx: handshakes.append(name)
    live.close_connections = True  # every admission on a new connection: a new handshake
    stop = threading.Event()
    results: list[str] = []

    def create_loop(worker: int) -> None:
        i = 0
        while not stop.is_set():
            body = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
            body["metadata"]["name"] = f"rot-{worker}-{i}"
            try:
                api.create_namespaced_custom_object(
                    "kaito.sh", "v1alpha1", namespace, "workspaces", body
                )
                results.append("ok")
            except client.ApiException as exc:
                results.append(f"{exc.status}: {exc.body}")
            i += 1

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(create_loop, w) for w in range(3)]
        try:
            for _ in range(8):
                cert, key = serving_pem(pki)
                pki.key_file.write_bytes(key)  # not atomic: a mismatched pair is visible
                time.sleep(0.02)
                pki.cert_file.write_bytes(cert)
                time.sleep(0.3)
        finally:
            stop.set()
            for f in futures:
                f.result()
            live.close_connections = False
            live.reloader.ctx.sni_callback = None
    failed = [r for r in results if r != "ok"]
    assert len(results) >= 10
    assert not failed, failed[:3]
    assert len(handshakes) >= len(results)  # each create was admitted on a fresh handshake
    assert live.metric("kaito_webhook_tls_reloads_total", {"result": "ok"}) >= reloads + 4
    stored = control_plane.kubectl_json("get", "workspaces", "-n", namespace)["items"]
    assert len(stored) == len(results)
    assert all(w["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm" for w in stored)


_POD_TEMPLATE_WS = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-custom
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      apps: custom
inference:
  template:
    spec:
      containers:
        - name: server
          image: registry.example.com/custom-llm:1.0
          resources:
            limits:
              nvidia.com/gpu: "1"
"""


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"bogusField": 1}, "bogusField"),
        ({"resources": {"limits": {"nvidia.com/gpu": "lots"}}}, "quantities must match"),
        ({"name": "dup"}, "duplicate"),
    ],
)
def test_a_template_the_apiserver_refuses_is_refused_at_admission(
    live: RunningWebhook,
    control_plane: ControlPlane,
    namespace: str,
    change: dict[str, Any],
    words: str,
) -> None:
    cp = control_plane
    ws = yaml.safe_load(_POD_TEMPLATE_WS)
    containers = ws["inference"]["template"]["spec"]["containers"]
    if change == {"name": "dup"}:
        containers.append({**containers[0], "name": "server"})
    else:
        containers[0].update(change)
    out = apply(cp, ws, namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert "the apiserver refuses the Deployment this template renders" in out.stderr
    assert words in out.stderr
    assert cp.kubectl("get", "workspace", "-n", namespace, "-o", "name").stdout == ""

    out = apply(cp, _POD_TEMPLATE_WS, namespace)  # the valid template is admitted
    assert out.returncode == 0, out.stderr
    assert cp.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout == ""
    _delete(cp, namespace, "workspace-custom")


def test_cpu_workspaces_through_kubectl(
    live: RunningWebhook, control_plane: ControlPlane, namespace: str
) -> None:
    """A CPU preset on a CPU SKU is admitted quietly; on a GPU SKU it is admitted with a
    warning that kubectl prints; a GPU-only preset on a CPU SKU is refused (api.cpu)."""
    cp = control_plane
    cpu = seed.FALCON_7B.replace('"falcon-7b"', '"qwen2.5-0.5b-instruct"')
    assert cpu != seed.FALCON_7B
    out = apply(cp, cpu.replace("Standard_NC6s_v3", "Standard_D8s_v5"), namespace)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr
    assert _get(cp, namespace)["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"
    _delete(cp, namespace)

    out = apply(cp, cpu, namespace)  # on Standard_NC6s_v3
    assert out.returncode == 0, out.stderr
    assert "Warning: qwen2.5-0.5b-instruct is a CPU-capable preset on GPU instance type " in (
        out.stderr
    )
    assert "set resource.instanceType to a CPU SKU, e.g. Standard_D4s_v5" in out.stderr
    _delete(cp, namespace)

    out = apply(cp, seed.FALCON_7B.replace("Standard_NC6s_v3", "r7i.xlarge"), namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert "resource.instanceType: is a CPU-only instance type (r7i.xlarge" in out.stderr
    assert "fix: use a CPU-capable preset on it (qwen2.5-0.5b-instruct" in out.stderr
