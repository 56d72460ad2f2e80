"""What the reconciler does with objects admission never judged, and with the apiserver's
refusals (issue 14), on the real control plane without the webhook."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    StartReconciler,
    apply,
    claims_of,
    get,
    items,
    settle,
    wait_condition,
    wait_ready,
)
from tests.reconciler.invalid_examples import INVALID
from tests.support.procs import free_port, wait_until
from tests.webhook.support import make_pki
from webhook import registration


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
    containers = ws["inference"]["template"]["spec"]["containers"]
    if container_fields.pop("duplicate", False):
        containers.append({**containers[0], "resources": {}})
    containers[0].update(container_fields)
    return ws


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"bogusField": 1}, "not declared in schema"),
        ({"duplicate": True}, "duplicate entries"),
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


@contextmanager
def _webhook_down(cp: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[None]:
    """Our webhook configurations (as shipped: failurePolicy Fail, matchConditions), scoped
    to the test's namespace, pointing at a port where nothing listens."""
    name = f"kaito-down-{uuid.uuid4().hex[:6]}"
    ca = make_pki(tmp_path).ca_pem
    for obj in registration.url_configurations(name, "127.0.0.1", free_port(), ca):
        for hook in obj["webhooks"]:
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
    try:
        yield
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cp.kubectl("delete", kind, name, "--ignore-not-found")


def _refused_by_dead_webhook(cp: ControlPlane, namespace: str) -> bool:
    probe = examples.SEED_FALCON.replace("name: workspace-falcon-7b\n", "name: probe\n", 1)
    out = cp.kubectl(
        "apply", "-n", namespace, "--dry-run=server", "-f", "-", input=probe, check=False
    )
    return out.returncode != 0 and "failed calling webhook" in out.stderr


def test_finalizer_writes_do_not_wait_for_a_webhook_that_is_down(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, tmp_path: Path
) -> None:
    apply(crds, namespace, examples.SEED_FALCON)  # admitted before the webhook went down
    with _webhook_down(crds, namespace, tmp_path):
        wait_until(lambda: _refused_by_dead_webhook(crds, namespace), 30, "the webhook in force")
        # A change the webhook judges still needs it.
        out = crds.kubectl(
            "annotate", "workspace", "workspace-falcon-7b", "-n", namespace, "x=y", check=False
        )
        assert out.returncode != 0
        assert "failed calling webhook" in out.stderr

        start_reconciler()  # adds its finalizer (an UPDATE of finalizers only), provisions
        ws = wait_ready(crds, namespace, "workspace-falcon-7b")
        assert "kaito.sh/nodeclaims" in ws["metadata"]["finalizers"]
        crds.kubectl("delete", "workspace", "workspace-falcon-7b", "-n", namespace, "--wait=false")
        wait_until(
            lambda: get(crds, "workspace", namespace, "workspace-falcon-7b") is None,
            30,
            "the Workspace to be finalized while the webhook is down",
        )
        assert claims_of(crds, namespace, "workspace-falcon-7b") == []


def test_a_lost_nodeclaim_event_is_re_emitted_from_state(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler
) -> None:
    """A crash between creating a NodeClaim and recording its Event: the Event is lost. Here
    it is deleted, and the reconciler killed; the next one makes it again from the claim."""
    first = start_reconciler(name="first")
    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, "workspace-falcon-7b")
    (claim,) = claims_of(crds, namespace, "workspace-falcon-7b")
    first.kill()
    crds.kubectl("delete", "events", "--all", "-n", namespace)
    start_reconciler(name="second")

    def created() -> list[dict[str, object]]:
        return [
            e
            for e in items(crds, "events", namespace)
            if e["reason"] == "NodeClaimCreated"
            and claim["metadata"]["name"] in e.get("message", "")
        ]

    (event,) = wait_until(created, 30, "the NodeClaimCreated Event again")
    assert event["firstTimestamp"] == claim["metadata"]["creationTimestamp"]
