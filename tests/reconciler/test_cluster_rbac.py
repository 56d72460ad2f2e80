"""The reconciler works with exactly the RBAC of ``tests/reconciler/rbac.py`` (no more)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples, rbac
from tests.reconciler.helpers import (
    StartReconciler,
    apply,
    claims_of,
    get,
    wait_condition,
    wait_ready,
)
from tests.support.procs import wait_until

NAME = "workspace-falcon-7b"


def _token_kubeconfig(cp: ControlPlane, namespace: str, sa: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_file)},
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(cfg))
    return path


def test_least_privilege_rbac_is_enough(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, tmp_path: Path
) -> None:
    for obj in rbac.manifests("kaito-reconciler", namespace):
        crds.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kubeconfig = _token_kubeconfig(crds, namespace, "kaito-reconciler", tmp_path / "sa.kc")
    # Nothing more: an admin-only call is refused with this identity.
    denied = crds.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "secrets", "-n", namespace, check=False
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr
    proc = start_reconciler(kubeconfig=kubeconfig)
    apply(crds, namespace, examples.SEED_ADAPTERS)
    wait_ready(crds, namespace, NAME)
    crds.kubectl(
        "patch",
        "workspace",
        NAME,
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/inference/adapters/0/strength", "value": "0.4"}]),
    )

    def rolled() -> bool:
        dep = get(crds, "deployment", namespace, NAME)
        cmd = (
            (dep or {})
            .get("spec", {})
            .get("template", {})
            .get("spec", {})
            .get("containers", [{}])[0]
            .get("command", [])
        )
        return "falcon-7b-adapter=0.4" in cmd

    wait_until(rolled, 30, "the update")
    wait_ready(crds, namespace, NAME)
    crds.kubectl("delete", "workspace", NAME, "-n", namespace, "--timeout=60s", timeout=70)
    assert claims_of(crds, namespace, NAME) == []
    log = proc.tail(100000)
    assert "403" not in log, log[-3000:]
    assert "Forbidden" not in log


def test_missing_permission_is_reported_in_status(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, tmp_path: Path
) -> None:
    objs = copy.deepcopy(rbac.manifests("kaito-reconciler", namespace))
    for rule in objs[1]["rules"]:
        if rule["resources"] == ["nodeclaims"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    for obj in objs:
        crds.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kubeconfig = _token_kubeconfig(crds, namespace, "kaito-reconciler", tmp_path / "sa.kc")
    start_reconciler(kubeconfig=kubeconfig)
    apply(crds, namespace, examples.SEED_FALCON)
    ws = wait_condition(
        crds, namespace, NAME, "ResourceReady", "False", reason="NodeClaimRefused", timeout=30
    )
    msg = next(c["message"] for c in ws["status"]["conditions"] if c["type"] == "ResourceReady")
    assert "cannot create resource" in msg
    assert "check the reconciler's RBAC" in msg
    # Give the permission back: the backoff retries and the Workspace becomes Ready.
    for obj in rbac.manifests("kaito-reconciler", namespace):
        crds.kubectl("apply", "-f", "-", input=json.dumps(obj))
    wait_ready(crds, namespace, NAME)
