"""``kubectl apply -k manifests/`` on a real control plane, and the RBAC proof.

The module starts its own control plane (etcd, kube-apiserver, controller-manager, scheduler,
KWOK): the install creates cluster-wide objects with fixed names (namespace kaito-system, the
kaito-workspace-webhook configurations with failurePolicy Fail, the Workspace CRD applied
client-side) that must not meet the other tests' objects on the shared one.

The RBAC proof runs the webhook (and the reconciler) as real processes with a kubeconfig holding
the kaito-controller ServiceAccount's token, with the Deployment's own arguments and
environment, and drives Workspaces through admission (and to Ready); `kubectl auth can-i`
shows what the ServiceAccount cannot do.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.crd import NODECLAIM_CRD_FILE
from api.quantity import parse_bytes
from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.install.cluster import (
    SA_USER,
    WEBHOOK_NAME,
    Process,
    can_i,
    get_json,
    kubectl_as_sa,
    point_webhooks_at,
    sa_kubeconfig,
)
from tests.install.manifests import (
    MANIFESTS,
    NAMESPACE,
    command_module,
    container,
    container_env,
    find,
    install_objects,
)
from tests.support import fake_cloud
from tests.support.procs import free_port, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PLACEHOLDER_DENIAL = "is the documentation's placeholder"
DESIRED_HASH = "kaito.sh/desired-hash"  # reconciler/plan.py ANNOTATION_DESIRED_HASH


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        plane.start_controllers()
        plane.start_kwok()
        # Karpenter's CRD, as on a cluster with Karpenter (the install leaves it to Karpenter).
        plane.kubectl("apply", "-f", str(MANIFESTS / "crd" / NODECLAIM_CRD_FILE))
        plane.kubectl(
            "wait", "--for=condition=Established", "crd/nodeclaims.karpenter.sh", "--timeout=60s"
        )
        yield plane


@pytest.fixture(scope="module")
def first_apply(cp: ControlPlane) -> Any:
    out = cp.kubectl("apply", "-k", str(MANIFESTS), check=False)
    if out.returncode == 0:
        cp.kubectl(
            "wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s"
        )
    return out


@pytest.fixture(scope="module")
def installed(cp: ControlPlane, first_apply: Any) -> ControlPlane:
    assert first_apply.returncode == 0, first_apply.stderr
    return cp


def _versions(cp: ControlPlane) -> dict[str, str]:
    """Each installed object's generation (spec changes) or, without one, resourceVersion."""
    items = json.loads(cp.kubectl("get", "-k", str(MANIFESTS), "-o", "json").stdout)["items"]
    out = {}
    for o in items:
        meta = o["metadata"]
        key = f"{o['kind']}/{meta.get('namespace', '')}/{meta['name']}"
        out[key] = str(meta.get("generation") or meta["resourceVersion"])
        out[key + "#applied"] = meta["annotations"][
            "kubectl.kubernetes.io/last-applied-configuration"
        ]
    return out


def test_apply_k_installs_without_warnings_and_twice_changes_nothing(
    cp: ControlPlane, first_apply: Any
) -> None:
    assert first_apply.returncode == 0, first_apply.stderr
    assert first_apply.stderr == ""  # no warning of any kind (deprecations, PodSecurity, ...)
    lines = first_apply.stdout.splitlines()
    assert len(lines) == len(install_objects())
    assert all(line.endswith(" created") for line in lines), lines

    before = _versions(cp)
    again = cp.kubectl("apply", "-k", str(MANIFESTS), check=False)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    for line in again.stdout.splitlines():
        # kubectl always re-sends a PodDisruptionBudget's selector (its patch strategy is
        # "replace") and so prints "configured"; the server changes nothing (checked below).
        expected = "configured" if line.startswith("poddisruptionbudget") else "unchanged"
        assert line.endswith(f" {expected}"), line
    assert _versions(cp) == before

    # The restricted Pod Security level is enforced in kaito-system: the ReplicaSet's Pods are
    # admitted (Pending: the control plane has no node for them).
    wait_until(
        lambda: (
            len(
                cp.kubectl_json(
                    "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=kaito-controller"
                )["items"]
            )
            == 2
        ),
        90,
    )


def _rendered(cp: ControlPlane) -> list[dict[str, Any]]:
    text = cp.kubectl("kustomize", str(MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def test_the_deployment_validates_on_the_server_under_the_restricted_level(
    installed: ControlPlane,
) -> None:
    cp = installed
    deployment = find(_rendered(cp), "Deployment", "kaito-controller")
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
    assert out.stderr == ""
    assert "deployment.apps/kaito-controller" in out.stdout

    # The same check notices a weaker Pod: it is only a warning for a Deployment, on stderr.
    weak = json.loads(json.dumps(deployment))
    weak["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {}
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(weak))
    assert 'would violate PodSecurity "restricted:latest"' in out.stderr
    assert "allowPrivilegeEscalation" in out.stderr


CAN = [
    ("get", "secrets/kaito-webhook-certs", NAMESPACE),
    ("patch", "secrets/kaito-webhook-certs", NAMESPACE),
    ("create", "secrets", NAMESPACE),
    ("get", "configmaps/kaito-config", NAMESPACE),
    ("watch", "configmaps/kaito-config", NAMESPACE),
    # inference.config: users' ConfigMaps, read-only, in any namespace.
    ("get", "configmaps", "team-a"),
    ("list", "configmaps", None),
    ("watch", "configmaps", None),
    ("create", "leases.coordination.k8s.io", NAMESPACE),
    ("update", "leases.coordination.k8s.io/kaito-reconciler", NAMESPACE),
    ("list", "workspaces.kaito.sh", None),
    ("patch", "workspaces.kaito.sh", "team-a"),
    ("patch", "workspaces.kaito.sh/status", "team-a"),
    ("create", "deployments.apps", "team-a"),
    ("delete", "statefulsets.apps", "team-a"),
    ("patch", "services", "team-a"),
    ("list", "pods", None),
    ("create", "events", "team-a"),
    ("get", "nodes", None),
    ("create", "nodeclaims.karpenter.sh", None),
    ("delete", "nodeclaims.karpenter.sh", None),
    ("patch", f"mutatingwebhookconfigurations/{WEBHOOK_NAME}", None),
    ("get", f"validatingwebhookconfigurations/{WEBHOOK_NAME}", None),
]

CANNOT = [
    # Secrets: only its own, only in kaito-system, never listed.
    ("get", "secrets", "default"),
    ("get", "secrets/kaito-webhook-certs", "default"),
    ("get", "secrets/other", NAMESPACE),
    ("list", "secrets", NAMESPACE),
    ("watch", "secrets", NAMESPACE),
    ("delete", "secrets/kaito-webhook-certs", NAMESPACE),
    ("create", "secrets", "default"),
    # ConfigMaps: read-only (inference.config); Leases: only its own.
    ("update", "configmaps/kaito-config", NAMESPACE),
    ("create", "configmaps", "default"),
    ("patch", "configmaps/other", "team-a"),
    ("delete", "configmaps/other", "team-a"),
    ("update", "leases.coordination.k8s.io/kube-controller-manager", "kube-system"),
    ("update", "leases.coordination.k8s.io/other", NAMESPACE),
    # Unrelated kinds and privilege.
    ("delete", "namespaces", None),
    ("create", "namespaces", None),
    ("create", "clusterrolebindings", None),
    ("create", "rolebindings", NAMESPACE),
    ("escalate", "clusterroles", None),
    ("bind", "clusterroles", None),
    ("impersonate", "serviceaccounts", None),
    ("create", "serviceaccounts/token", NAMESPACE),
    ("create", "pods", "team-a"),
    ("delete", "pods", "team-a"),
    ("create", "pods/exec", "team-a"),
    ("get", "pods/log", "team-a"),
    ("patch", "nodes", None),
    ("delete", "nodes", None),
    ("create", "workspaces.kaito.sh", "team-a"),
    ("delete", "workspaces.kaito.sh", "team-a"),
    ("update", "workspaces.kaito.sh", "team-a"),
    ("update", "deployments.apps/scale", "team-a"),
    ("delete", "customresourcedefinitions", None),
    ("create", "mutatingwebhookconfigurations", None),
    ("delete", f"mutatingwebhookconfigurations/{WEBHOOK_NAME}", None),
    ("patch", "validatingwebhookconfigurations/someone-elses", None),
    ("create", "certificatesigningrequests", None),
    ("*", "*", None),
]


def test_the_service_account_may_do_what_the_code_needs_and_no_more(
    installed: ControlPlane,
) -> None:
    denied = [c for c in CAN if not can_i(installed, *c)]
    assert not denied, f"{SA_USER} lacks {denied}"
    granted = [c for c in CANNOT if can_i(installed, *c)]
    assert not granted, f"{SA_USER} may {granted}"


def _deployment() -> dict[str, Any]:
    return find(install_objects(), "Deployment", "kaito-controller")


def _container_process(
    name: str, extra: list[str], log: Path, *, pod: str = "kaito-controller-test-0"
) -> Process:
    """The Deployment's container ``name`` as a local process: its module, args and env,
    with ``extra`` flags (kubeconfig, loopback address) appended (flags given last win)."""
    c = container(_deployment(), name)
    env = container_env(c, pod=pod)
    return Process(name, command_module(c), [*(c.get("args") or []), *extra], env, log)


def _limit_kib(name: str) -> int:
    return parse_bytes(container(_deployment(), name)["resources"]["limits"]["memory"]) // 1024


def _secret_ca(cp: ControlPlane) -> bytes:
    secret = cp.kubectl_json("get", "secret", "kaito-webhook-certs", "-n", NAMESPACE)
    return base64.b64decode(secret["data"]["ca.crt"])


def _https_ok(url: str, ca_pem: bytes) -> bool:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _apply(cp: ControlPlane, text: str, namespace: str, *extra: str) -> Any:
    return cp.kubectl("apply", "-n", namespace, "-f", "-", *extra, input=text, check=False)


def _bundle(cp: ControlPlane, kind: str) -> bytes:
    config = get_json(cp, kind, WEBHOOK_NAME) or {}
    cc = ((config.get("webhooks") or [{}])[0]).get("clientConfig") or {}
    return base64.b64decode(cc.get("caBundle") or "")


@pytest.fixture(scope="module")
def sa_kc(installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig with the ServiceAccount's token, and proof that it is not the admin's."""
    cp = installed
    kubeconfig = sa_kubeconfig(cp, tmp_path_factory.mktemp("sa") / "sa.kubeconfig")
    who = kubectl_as_sa(cp, kubeconfig, "auth", "whoami", "-o", "json")
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == SA_USER
    refused = kubectl_as_sa(cp, kubeconfig, "get", "secrets", "-n", "default")
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr
    return kubeconfig


def _check_exit(process: Process, code: int | None) -> None:
    text = process.text()
    assert code == 0, text[-3000:]
    assert "forbidden" not in text.lower(), text[-3000:]
    assert " 403" not in text, text[-3000:]


@pytest.fixture(scope="module")
def webhook(
    installed: ControlPlane, sa_kc: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """The Deployment's webhook container as a process with the ServiceAccount's token."""
    cp = installed
    # The out-of-cluster processes stand in for the Deployment's Pods.
    cp.kubectl("scale", "deployment/kaito-controller", "-n", NAMESPACE, "--replicas=0")
    port = free_port()
    point_webhooks_at(cp, f"https://127.0.0.1:{port}")
    log = tmp_path_factory.mktemp("webhook") / "webhook.log"
    extra = [f"--kubeconfig={sa_kc}", "--host=127.0.0.1", f"--port={port}"]
    process = _container_process("webhook", [*extra, "--config-poll-seconds=0.5"], log).start()
    process.port = port
    try:
        # The certificate manager created its Secret and wrote the caBundle back into both
        # configurations, with the ServiceAccount's create/get/patch alone.
        wait_until(
            lambda: (
                not process.alive()
                or get_json(cp, "secret", "kaito-webhook-certs", "-n", NAMESPACE) is not None
            ),
            60,
        )
        assert process.alive(), process.text()
        ca = _secret_ca(cp)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            wait_until(lambda k=kind: _bundle(cp, k) == ca, 60)  # type: ignore[misc]
        wait_until(lambda: _https_ok(f"https://127.0.0.1:{port}/readyz", ca), 60)
        cp.kubectl("create", "namespace", "team-a")
        # In force once the documentation's placeholder image is refused.
        wait_until(
            lambda: (
                PLACEHOLDER_DENIAL
                in _apply(cp, seed.FALCON_7B_ADAPTERS, "team-a", "--dry-run=server").stderr
            ),
            60,
        )
        yield process
        assert process.peak_rss_kib() < _limit_kib("webhook"), process.peak_rss_kib()
    finally:
        code = process.stop()
    _check_exit(process, code)


def test_the_webhook_works_with_its_service_accounts_token_alone(
    installed: ControlPlane, webhook: Process
) -> None:
    cp = installed
    # /validate looks preferred nodes up (get nodes): a missing one is named as such ...
    missing = yaml.safe_load(seed.FALCON_7B)
    missing["resource"] = {
        "preferredNodes": ["no-such-node"],
        "labelSelector": {"matchLabels": {"apps": "falcon-7b"}},
    }
    out = _apply(cp, json.dumps(missing), "team-a", "--dry-run=server")
    assert "names a node that does not exist" in out.stderr, out.stderr

    # ... and /mutate writes the admin default it reads from kaito-config (get configmaps).
    def runtime_default() -> str:
        out = _apply(cp, seed.FALCON_7B, "team-a", "--dry-run=server", "-o", "json")
        if out.returncode != 0:
            return ""
        annotations = json.loads(out.stdout)["metadata"].get("annotations") or {}
        return str(annotations.get("kaito.sh/runtime", ""))

    for runtime in ("transformers", "vllm"):
        cp.kubectl(
            "patch", "configmap", "kaito-config", "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps({"data": {"defaultRuntime": runtime}}),
        )  # fmt: skip
        wait_until(lambda r=runtime: runtime_default() == r, 30)  # type: ignore[misc]


def _rbac_verbs(call: str, resource: str, code: str) -> set[tuple[str, str]]:
    """A request counted by the reconciler's kaito_reconciler_api_requests_total (verb,
    resource, code) as the RBAC (verb, resource) pairs it needed. A server-side apply is a PATCH
    and, when it creates the object (HTTP 201), a create as well."""
    verb, _, sub = call.partition("/")
    name = f"{resource}/{sub}" if sub else resource
    if verb == "apply":
        return {("patch", name), ("create", name)} if code == "201" else {("patch", name)}
    return {(verb, name)}


# Granted for paths this scenario does not take: multi-node Workspaces (StatefulSets), removal
# of objects a changed Workspace no longer needs, the finalizer fallback for an entry owned by
# another field manager, the authorization-only workspaces/finalizers check.
CONDITIONAL = {
    ("create", "statefulsets.apps"),
    ("patch", "statefulsets.apps"),
    ("delete", "statefulsets.apps"),
    ("delete", "deployments.apps"),
    ("delete", "services"),
    ("update", "workspaces.kaito.sh/finalizers"),
}
# What the webhook and the certificate manager use from the reconciler's rules (not counted by
# the reconciler's metric).
NOT_THE_RECONCILERS = {
    ("get", "nodes"),
    ("get", "secrets"),
    ("patch", "secrets"),
    ("create", "secrets"),
    ("get", "configmaps"),
    ("get", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("get", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
}


def _granted() -> set[tuple[str, str]]:
    out = set()
    for kind in ("Role", "ClusterRole"):
        for rule in find(install_objects(), kind, "kaito-controller")["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    plural, _, sub = resource.partition("/")
                    name = f"{plural}.{group}" if group else plural
                    for verb in rule["verbs"]:
                        out.add((verb, f"{name}/{sub}" if sub else name))
    return out


def _requests(port: int) -> dict[tuple[str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kaito_reconciler_api_requests_total":
                labels = sample.labels
                out[(labels["verb"], labels["resource"], labels["code"])] = sample.value
    return out


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _conditions(ws: dict[str, Any] | None) -> dict[str, str]:
    return {
        c["type"]: c["status"] for c in ((ws or {}).get("status") or {}).get("conditions") or []
    }


def test_the_reconciler_serves_a_workspace_with_its_service_accounts_token_alone(
    installed: ControlPlane, webhook: Process, sa_kc: Path, tmp_path: Path
) -> None:
    cp = installed
    name, namespace = "workspace-falcon-7b", "team-b"
    identity = "kaito-controller-test-0"  # POD_NAME → KAITO_RECONCILER_IDENTITY
    port = free_port()
    reconciler = _container_process(
        "reconciler",
        [
            f"--kubeconfig={sa_kc}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={port}",
            "--pending-requeue-s=1",
            # Renew the Lease often: the scenario can finish before a 2 s renewal, and the
            # verb check below expects `update leases` to have been used.
            "--retry-period-s=0.5",
        ],
        tmp_path / "reconciler.log",
        pod=identity,
    ).start()
    try:
        with fake_cloud.FakeCloud(cp):  # Karpenter's part: NodeClaims become KWOK GPU nodes
            wait_until(
                lambda: not reconciler.alive() or _http_ok(f"http://127.0.0.1:{port}/readyz"), 60
            )
            assert reconciler.alive(), reconciler.text()

            def holder() -> str:
                lease = get_json(cp, "lease", "kaito-reconciler", "-n", NAMESPACE) or {}
                return str((lease.get("spec") or {}).get("holderIdentity", ""))

            wait_until(lambda: not reconciler.alive() or holder() == identity, 60)
            assert reconciler.alive(), reconciler.text()

            cp.kubectl("create", "namespace", namespace)
            out = _apply(cp, seed.FALCON_7B, namespace)  # through the webhook, as a user would
            assert out.returncode == 0, out.stderr

            def ready() -> dict[str, Any]:
                ws: dict[str, Any] = get_json(cp, "workspace", name, "-n", namespace) or {}
                conds = _conditions(ws)
                wanted = ("ResourceReady", "InferenceReady", "WorkspaceSucceeded")
                return ws if all(conds.get(t) == "True" for t in wanted) else {}

            try:
                ws = wait_until(ready, 180)
            except TimeoutError:
                status = (get_json(cp, "workspace", name, "-n", namespace) or {}).get("status")
                raise AssertionError(
                    f"not Ready: {json.dumps(status, indent=1)}\n{reconciler.text()[-3000:]}"
                ) from None
            assert ws["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"  # the webhook

            # The cloud records the node on the claim after the reconciler may have used it.
            def launched() -> list[dict[str, Any]]:
                claims: list[dict[str, Any]] = cp.kubectl_json(
                    "get", "nodeclaims", "-l", f"kaito.sh/workspace={name}"
                )["items"]
                done = all((c.get("status") or {}).get("nodeName") for c in claims)
                return claims if done else []

            claims = wait_until(launched, 30, f"the NodeClaim of {name} to record its node")
            assert len(claims) == 1
            assert ws["status"]["workerNodes"] == [claims[0]["status"]["nodeName"]]
            for kind in ("deployment", "service"):
                obj = cp.kubectl_json("get", kind, name, "-n", namespace)
                assert obj["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
            pods = cp.kubectl_json(
                "get", "pods", "-n", namespace, "-l", f"kaito.sh/workspace={name}"
            )["items"]
            assert [p["spec"]["nodeName"] for p in pods] == ws["status"]["workerNodes"]
            reasons = {
                e["reason"]
                for e in cp.kubectl_json("get", "events", "-n", namespace)["items"]
                if e["involvedObject"].get("name") == name
            }
            assert {"NodeClaimCreated", "WorkloadCreated", "WorkspaceReady"} <= reasons

            # Drift: an edit to an object it owns is applied back (patch, not create).
            owned = [("deployment", name, namespace), ("service", name, namespace)]
            hashes = {}
            for kind, obj_name, ns in owned:
                where = ["-n", ns] if ns else []
                obj = cp.kubectl_json("get", kind, obj_name, *where)
                hashes[kind] = obj["metadata"]["annotations"][DESIRED_HASH]
                cp.kubectl(
                    "annotate", kind, obj_name, *where, "--overwrite", f"{DESIRED_HASH}=edited"
                )
            for kind, obj_name, ns in owned:
                where = ["-n", ns] if ns else []

                def restored(k: str = kind, n: str = obj_name, w: list[str] = where) -> bool:
                    obj = cp.kubectl_json("get", k, n, *w)
                    return bool(obj["metadata"]["annotations"][DESIRED_HASH] == hashes[k])

                wait_until(restored, 60)

            # Deletion: the finalizer waits for the NodeClaims to go (delete nodeclaims).
            cp.kubectl("delete", "workspace", name, "-n", namespace, "--timeout=120s", timeout=150)
            wait_until(
                lambda: (
                    not cp.kubectl_json("get", "nodeclaims", "-l", f"kaito.sh/workspace={name}")[
                        "items"
                    ]
                ),
                60,
            )

            wait_until(
                lambda: any(
                    k[0] == "update" and k[1].startswith("leases") for k in _requests(port)
                ),
                30,
            )
            requests = _requests(port)
            assert reconciler.peak_rss_kib() < _limit_kib("reconciler")
    finally:
        code = reconciler.stop()
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    _check_exit(reconciler, code)

    refused = {k: v for k, v in requests.items() if k[2] in ("401", "403")}
    assert not refused, refused
    used = {pair for key in requests for pair in _rbac_verbs(*key)}
    granted = _granted()
    assert used - granted == set()  # nothing it did was outside its rules (no 403 above) ...
    unused = granted - used - CONDITIONAL - NOT_THE_RECONCILERS
    assert not unused, f"granted but never used by the reconciler: {sorted(unused)}"
