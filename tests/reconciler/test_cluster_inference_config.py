"""Issue 12 item 4 on the real control plane: ``inference.config`` reaches the Pod template as
runtime flags plus a hash annotation; a ConfigMap change rolls the template; a ConfigMap
deleted or made invalid later is a status reason and the workload is left as it is."""

from __future__ import annotations

from typing import Any

import yaml

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    apply,
    get,
    wait_condition,
    wait_ready,
)
from tests.support.procs import wait_until

HASH = "kaito.sh/inference-config-hash"


def _configmap(name: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"inference_config.yaml": text},
    }


def _template(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    dep = get(cp, "deployment", namespace, name)
    assert dep is not None
    template: dict[str, Any] = dep["spec"]["template"]
    return template


def _command(template: dict[str, Any]) -> list[str]:
    (container,) = template["spec"]["containers"]
    command: list[str] = container["command"]
    return command


def test_vllm_settings_roll_out_and_a_broken_configmap_is_a_status_reason(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    cp = crds
    apply(
        cp,
        namespace,
        _configmap("params", "vllm:\n  max-model-len: 4096\n  gpu-memory-utilization: 0.8\n"),
    )
    manifest = yaml.safe_load(examples.SEED_FALCON)
    manifest["inference"]["config"] = "params"
    apply(cp, namespace, manifest)
    name = manifest["metadata"]["name"]
    wait_ready(cp, namespace, name)

    first = _template(cp, namespace, name)
    command = _command(first)
    assert command[command.index("--max-model-len") + 1] == "4096"
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.8"
    digest = first["metadata"]["annotations"][HASH]

    # A valid change: new flags and a new hash on the Pod template (a rollout).
    apply(cp, namespace, _configmap("params", "vllm:\n  max-num-seqs: 8\n"))

    def rolled() -> dict[str, Any] | None:
        template = _template(cp, namespace, name)
        return template if template["metadata"]["annotations"].get(HASH) != digest else None

    second = wait_until(rolled, 60)
    command = _command(second)
    assert "--vllm-arg=--max-num-seqs=8" in command
    assert "--gpu-memory-utilization" not in command
    wait_ready(cp, namespace, name)

    # Made invalid later: InferenceConfigInvalid, naming the key; the workload stays.
    apply(cp, namespace, _configmap("params", "vllm:\n  max-num-seqs: 0\n"))
    ws = wait_condition(
        cp, namespace, name, "InferenceReady", "False", reason="InferenceConfigInvalid"
    )
    message = next(
        c["message"] for c in ws["status"]["conditions"] if c["type"] == "InferenceReady"
    )
    assert "ConfigMap params, key inference_config.yaml: vllm.max-num-seqs is out of range" in (
        message
    )
    assert "an integer from 1 to 65536" in message
    assert _template(cp, namespace, name) == second

    # Deleted: InferenceConfigMissing; the workload is still there, unchanged.
    cp.kubectl("delete", "configmap", "params", "-n", namespace)
    ws = wait_condition(
        cp, namespace, name, "InferenceReady", "False", reason="InferenceConfigMissing"
    )
    message = next(
        c["message"] for c in ws["status"]["conditions"] if c["type"] == "InferenceReady"
    )
    assert "does not exist" in message
    assert "kubectl create configmap params" in message
    assert _template(cp, namespace, name) == second

    # Back again: the Workspace heals without being touched.
    apply(cp, namespace, _configmap("params", "vllm:\n  max-num-seqs: 8\n"))
    wait_ready(cp, namespace, name)

    # inference.config removed: the flags and the annotation go, the Pods roll again.
    cp.kubectl(
        "patch", "workspace", name, "-n", namespace, "--type=json",
        "-p", '[{"op": "remove", "path": "/inference/config"}]',
    )  # fmt: skip

    def plain() -> dict[str, Any] | None:
        template = _template(cp, namespace, name)
        return None if HASH in (template["metadata"].get("annotations") or {}) else template

    command = _command(wait_until(plain, 60))
    assert not any(a.startswith("--vllm-arg") for a in command)
    wait_ready(cp, namespace, name)


def test_transformers_settings_cap_the_sized_context(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    cp = crds
    apply(
        cp,
        namespace,
        _configmap(
            "tf-params",
            "vllm:\n  max-model-len: 64\ntransformers:\n  max-model-len: 1000\n  max-num-seqs: 4\n",
        ),
    )
    manifest = yaml.safe_load(examples.SEED_TRANSFORMERS)
    manifest["inference"]["config"] = "tf-params"
    apply(cp, namespace, manifest)
    name = manifest["metadata"]["name"]
    wait_ready(cp, namespace, name)
    command = _command(_template(cp, namespace, name))
    assert command.count("--max-model-len") == 1
    assert command[command.index("--max-model-len") + 1] == "1000"
    assert command[command.index("--max-num-seqs") + 1] == "4"
    assert "--vllm-arg" not in " ".join(command)  # only the runtime's own section
