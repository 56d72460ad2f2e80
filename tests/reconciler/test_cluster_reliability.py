"""What the reconciler does with objects admission never judged, and with the apiserver's
refusals (issue 14), on the real control plane without the webhook."""

from __future__ import annotations

import copy
import json

import pytest

from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    apply,
    claims_of,
    items,
    settle,
    wait_condition,
    wait_ready,
)
from tests.reconciler.invalid_examples import INVALID


def test_workspaces_admission_never_saw_are_invalid_and_get_nothing(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    for obj, _ in INVALID.values():
        apply(crds, namespace, obj)
    for case, (obj, words) in INVALID.items():
        name = obj["metadata"]["name"]
        ws = wait_condition(crds, namespace, name, "ResourceReady", "False", reason="InvalidSpec")
        conds = {c["type"]: c for c in ws["status"]["conditions"]}
        assert words in conds["ResourceReady"]["message"], case
        assert conds["InferenceReady"]["reason"] == "InvalidSpec", case
        assert claims_of(crds, namespace, name) == [], case
    assert items(crds, "deployments", namespace) == []
    assert items(crds, "statefulsets", namespace) == []
    assert items(crds, "nodes", None, f"kaito.sh/workspacenamespace={namespace}") == []


def _template_with(**container_fields: object) -> dict[str, object]:
    ws = seed.load(examples.TEMPLATE)
    ws["inference"]["template"]["spec"]["containers"][0].update(container_fields)
    return ws


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"bogusField": 1}, "not declared in schema"),
        ({"resources": {"limits": {"nvidia.com/gpu": "lots"}}}, "lots"),
    ],
)
def test_a_workload_the_apiserver_refuses_is_reported_and_not_retried(
    crds: ControlPlane,
    namespace: str,
    reconciler: ReconcilerProc,
    fields: dict[str, object],
    words: str,
) -> None:
    apply(crds, namespace, _template_with(**fields))
    ws = wait_condition(
        crds, namespace, "workspace-custom", "InferenceReady", "False", reason="WorkloadRefused"
    )
    conds = {c["type"]: c for c in ws["status"]["conditions"]}
    assert conds["ResourceReady"]["status"] == "True"  # the node is there: not "Provisioning"
    assert words in conds["InferenceReady"]["message"]
    assert "the apiserver refused the workload" in conds["InferenceReady"]["message"]
    errors = reconciler.total('kaito_reconciler_reconciles_total{result="error"}')
    settle(3)  # a transient error would be retried within the 2 s maximum backoff
    assert reconciler.total('kaito_reconciler_reconciles_total{result="error"}') == errors

    fixed = copy.deepcopy(seed.load(examples.TEMPLATE))
    apply(crds, namespace, json.dumps(fixed))
    wait_ready(crds, namespace, "workspace-custom")
