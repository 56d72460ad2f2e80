"""Issue 12 item 3 in the reconciler: HF_TOKEN reaches both runtimes as a secretKeyRef (never a
value), and kubelet's report of a missing modelAccessSecret becomes ModelAccessSecretMissing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.workspace import RUNTIME_ANNOTATION, Workspace
from reconciler.observe import slim
from reconciler.status import (
    REASON_CONFIG_ERROR,
    REASON_MODEL_ACCESS_SECRET,
    Cond,
    inference_condition,
)
from reconciler.workload import Images, render
from tests.reconciler.goldens import workspace
from tests.reconciler.test_nodes import needs_of
from tests.reconciler.test_status import OK, deployment

IMAGES = Images(vllm="example.com/vllm:1", transformers="example.com/tf:1")


def _with(runtime: str, secret: str | None) -> Workspace:
    obj = workspace("falcon-vllm").to_dict()
    obj["metadata"]["annotations"][RUNTIME_ANNOTATION] = runtime
    if secret:
        obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": secret}
    return Workspace.from_dict(obj)


@pytest.mark.parametrize("runtime", ["vllm", "transformers"])
def test_the_token_is_a_secret_key_ref_for_both_runtimes(runtime: str) -> None:
    ws = _with(runtime, "hf-token")
    objs = render(ws, needs_of(ws), nodes=["n1"], images=IMAGES)
    (container,) = objs[-1]["spec"]["template"]["spec"]["containers"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    } in container["env"]
    assert not any("value" in e for e in container["env"] if e["name"] == "HF_TOKEN")
    plain = _with(runtime, None)
    objs = render(plain, needs_of(plain), nodes=["n1"], images=IMAGES)
    assert "HF_TOKEN" not in json.dumps(objs)


def _pod(message: str) -> dict[str, Any]:
    return slim(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p-1", "namespace": "ns", "labels": {}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "inference",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {
                                "reason": "CreateContainerConfigError",
                                "message": message,
                            }
                        },
                    }
                ],
            },
        }
    )


def _infer(message: str, secret: str | None) -> Cond:
    return inference_condition(
        resource=OK,
        workload=deployment(ready=0, available=0),
        pods=[_pod(message)],
        replicas=1,
        endpoint="http://w",
        model_access_secret=secret,
    )


def test_missing_secret_or_key_is_model_access_secret_missing() -> None:
    c = _infer('secret "hf-token" not found', "hf-token")
    assert c.reason == REASON_MODEL_ACCESS_SECRET
    assert "Secret hf-token (inference.preset.presetOptions.modelAccessSecret) does not exist" in (
        c.message
    )
    assert "kubectl create secret generic hf-token --from-literal=HF_TOKEN=hf_..." in c.message
    c = _infer("couldn't find key HF_TOKEN in Secret ns/hf-token", "hf-token")
    assert c.reason == REASON_MODEL_ACCESS_SECRET
    assert "has no HF_TOKEN key" in c.message
    # another Secret, or no modelAccessSecret: the generic reason
    assert _infer('secret "other" not found', "hf-token").reason == REASON_CONFIG_ERROR
    assert _infer('secret "hf-token" not found', None).reason == REASON_CONFIG_ERROR
