"""Issue 12 on the real control plane: a gated-model Workspace gets HF_TOKEN as a secretKeyRef,
and merged weights ask their NodeClaim for the merge's disk; the token is nowhere in the
Workspace, its workload, Pods or Events."""

from __future__ import annotations

import json

import yaml

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    apply,
    claims_of,
    get,
    items,
    wait_ready,
)

TOKEN = "hf_fidelity_secret_value_1234567890"


def test_the_token_reaches_the_pod_only_as_a_secret_key_ref(
    crds: ControlPlane, namespace: str, reconciler: ReconcilerProc
) -> None:
    crds.kubectl(
        "create", "secret", "generic", "hf-token", "-n", namespace,
        f"--from-literal=HF_TOKEN={TOKEN}",
    )  # fmt: skip
    manifest = yaml.safe_load(examples.SEED_ADAPTERS)
    manifest["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    apply(crds, namespace, manifest)
    name = manifest["metadata"]["name"]
    ws = wait_ready(crds, namespace, name)

    dep = get(crds, "deployment", namespace, name)
    assert dep is not None
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    } in container["env"]
    (claim,) = claims_of(crds, namespace, name)
    assert claim["spec"]["resources"]["requests"]["storage"] == "29Gi"  # falcon merge mode

    seen = json.dumps(
        [ws, dep, items(crds, "pods", namespace), items(crds, "events", namespace), claim]
    )
    assert TOKEN not in seen
