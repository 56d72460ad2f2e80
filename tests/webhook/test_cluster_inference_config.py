"""Issue 12 item 4 on the real apiserver (kubectl apply, patch and explain through the webhook):
``inference.config`` names a ConfigMap that must exist, parse, and set only known keys with
values in range; messages name the field, the ConfigMap, the key, the value and the fix."""

from __future__ import annotations

import json
from typing import Any

from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.webhook.cluster_support import apply
from tests.webhook.support import RunningWebhook
from tests.webhook.test_cluster import DENIED, admin_namespace, live  # noqa: F401


def _configmap(cp: ControlPlane, namespace: str, name: str, text: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"inference_config.yaml": text},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def _workspace(config: str, name: str = "workspace-falcon-7b") -> dict[str, Any]:
    obj = seed.load(seed.FALCON_7B)
    obj["metadata"]["name"] = name
    obj["inference"]["config"] = config
    return obj


def test_the_configmap_is_checked_at_admission(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    cp = control_plane
    prefix = "inference.config: ConfigMap params, key inference_config.yaml: "

    out = apply(cp, _workspace("params"), namespace)
    assert out.returncode != 0
    assert DENIED in out.stderr
    assert prefix + "the ConfigMap does not exist in the Workspace's namespace" in out.stderr
    assert "kubectl create configmap params --from-file=inference_config.yaml" in out.stderr

    _configmap(cp, namespace, "params", "vllm:\n  max-model-lenght: 4096\n")
    out = apply(cp, _workspace("params"), namespace)
    assert out.returncode != 0
    assert prefix + 'vllm.max-model-lenght is not a known setting (got "max-model-lenght")' in (
        out.stderr
    )
    assert "did you mean max-model-len? use one of max-model-len, gpu-memory-utilization" in (
        out.stderr
    )

    _configmap(cp, namespace, "params", "vllm:\n  gpu-memory-utilization: 1.5\n")
    out = apply(cp, _workspace("params"), namespace)
    assert out.returncode != 0
    assert prefix + "vllm.gpu-memory-utilization is out of range (got 1.5); fix: set " in (
        out.stderr
    )
    assert "to a number above 0 and at most 1" in out.stderr

    _configmap(cp, namespace, "params", "vllm:\n  max-model-len: [4096\n")
    out = apply(cp, _workspace("params"), namespace)
    assert out.returncode != 0
    assert prefix + "is not valid YAML at line" in out.stderr

    _configmap(
        cp, namespace, "params", "max_probe_steps: 6\nvllm:\n  gpu-memory-utilization: 0.9\n"
    )
    out = apply(cp, _workspace("params"), namespace)
    assert out.returncode == 0, out.stderr
    assert "sets max_probe_steps, which have no effect here" in out.stderr  # a warning
    stored = cp.kubectl_json("get", "workspace", "workspace-falcon-7b", "-n", namespace)
    assert stored["inference"]["config"] == "params"

    # An update that keeps the reference does not depend on the ConfigMap (the controller
    # reports it); one that renames it is checked again.
    cp.kubectl("delete", "configmap", "params", "-n", namespace)
    out = cp.kubectl(
        "label", "workspace", "workspace-falcon-7b", "-n", namespace, "team=a", check=False
    )
    assert out.returncode == 0, out.stderr
    out = cp.kubectl(
        "patch", "workspace", "workspace-falcon-7b", "-n", namespace, "--type=merge",
        "-p", json.dumps({"inference": {"config": "other"}}), check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "inference.config: ConfigMap other, key inference_config.yaml: the ConfigMap does " in (
        out.stderr
    )


def test_config_is_for_preset_workspaces_and_a_configmap_name(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    out = apply(control_plane, _workspace("Not_A_Name", name="bad-name"), namespace)
    assert out.returncode != 0
    assert "inference.config: is not a ConfigMap name: it must consist of" in out.stderr
    assert '(got "Not_A_Name")' in out.stderr


def test_kubectl_explain_describes_inference_config(
    live: RunningWebhook,  # noqa: F811
    control_plane: ControlPlane,
) -> None:
    out = control_plane.kubectl("explain", "workspace.inference.config").stdout
    text = " ".join(out.split())
    assert "Name of a ConfigMap in the Workspace's namespace whose inference_config.yaml key" in (
        text
    )
    assert "a change rolls the Pods out" in text
