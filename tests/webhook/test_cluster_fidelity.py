"""Issue 12 on the real apiserver (kubectl apply, patch and explain through the webhook): the
instanceType default, label selectors as label maps, modelAccessSecret for gated presets."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.cluster.nodes import create_fake_gpu_node
from tests.webhook.cluster_support import apply
from tests.webhook.support import RunningWebhook
from tests.webhook.test_cluster import DENIED, admin_namespace, live  # noqa: F401

IN_FORM = [{"key": "apps", "operator": "In", "values": ["falcon-7b"]}]


def _get(cp: ControlPlane, namespace: str, name: str = "workspace-falcon-7b") -> dict[str, Any]:
    out: dict[str, Any] = cp.kubectl_json("get", "workspace", name, "-n", namespace)
    return out


def test_instance_type_defaults_to_standard_nc12s_v3(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    cp = control_plane
    obj = seed.load(seed.FALCON_7B)
    del obj["resource"]["instanceType"]
    out = apply(cp, obj, namespace)
    assert out.returncode == 0, out.stderr
    assert _get(cp, namespace)["resource"]["instanceType"] == "Standard_NC12s_v3"

    node = f"{namespace}-prepared"
    create_fake_gpu_node(cp, node, "Standard_NC6s_v3", labels={"apps": "falcon-7b"})
    try:
        prepared = copy.deepcopy(obj)
        prepared["metadata"]["name"] = "prepared"
        prepared["resource"]["preferredNodes"] = [node]
        out = apply(cp, prepared, namespace)
        assert out.returncode == 0, out.stderr
        assert "instanceType" not in _get(cp, namespace, "prepared")["resource"]
    finally:
        cp.kubectl("delete", "node", node, "--wait=false", check=False)


def test_kubectl_explain_says_which_default_applies(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
) -> None:
    out = control_plane.kubectl("explain", "workspace.resource.instanceType").stdout
    text = " ".join(out.split())
    assert "the cluster admin's defaultInstanceType, else Standard_NC12s_v3" in text
    out = control_plane.kubectl(
        "explain", "workspace.inference.preset.presetOptions.modelAccessSecret"
    ).stdout
    text = " ".join(out.split())
    assert "HF_TOKEN environment variable (a secretKeyRef)" in text
    out = control_plane.kubectl("explain", "workspace.resource.labelSelector").stdout
    assert "exactly one value" in " ".join(out.split())


def test_single_value_in_selectors_are_accepted_and_equivalent_on_update(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    cp = control_plane
    assert apply(cp, seed.FALCON_7B, namespace).returncode == 0

    def patch(selector: dict[str, Any]) -> Any:
        body = json.dumps({"resource": {"labelSelector": selector}})
        return cp.kubectl(
            "patch", "workspace", "workspace-falcon-7b", "-n", namespace, "--type=merge",
            "-p", body, check=False,
        )  # fmt: skip

    out = patch({"matchLabels": None, "matchExpressions": IN_FORM})
    assert out.returncode == 0, out.stderr
    stored = _get(cp, namespace)["resource"]["labelSelector"]
    assert stored == {"matchExpressions": IN_FORM}
    out = patch({"matchExpressions": [{"key": "apps", "operator": "In", "values": ["other"]}]})
    assert out.returncode != 0
    assert "resource.labelSelector: is immutable" in out.stderr

    fresh = seed.load(seed.FALCON_7B)
    fresh["metadata"]["name"] = "in-form"
    fresh["resource"]["labelSelector"] = {"matchExpressions": IN_FORM}
    out = apply(cp, fresh, namespace)
    assert out.returncode == 0, out.stderr

    exists = copy.deepcopy(fresh)
    exists["metadata"]["name"] = "exists"
    exists["resource"]["labelSelector"]["matchExpressions"].append(
        {"key": "zone", "operator": "Exists"}
    )
    out = apply(cp, exists, namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert (
        "resource.labelSelector.matchExpressions[1]: cannot label the GPU nodes the controller "
        "provisions: operator Exists cannot be turned into a label of a provisioned node"
    ) in out.stderr


def test_gated_presets_need_a_model_access_secret(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    cp = control_plane
    obj = seed.load(seed.FALCON_7B)
    obj["metadata"]["name"] = "llama"
    obj["inference"]["preset"] = {"name": "llama-2-7b"}
    obj["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    out = apply(cp, obj, namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert (
        "inference.preset.presetOptions.modelAccessSecret: is required for llama-2-7b, a gated "
        "Hugging Face model (meta-llama/Llama-2-7b-hf)"
    ) in out.stderr
    assert "--from-literal=HF_TOKEN=hf_..." in out.stderr
    obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    out = apply(cp, obj, namespace)
    assert out.returncode == 0, out.stderr
    stored = _get(cp, namespace, "llama")["inference"]["preset"]["presetOptions"]
    assert stored == {"modelAccessSecret": "hf-token"}
