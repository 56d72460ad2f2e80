"""The install manifests, read without a cluster: what they install, the hardening of the
controller Pod, and that the names in the Deployment, the Service, RBAC, the webhook
configurations and the ConfigMap agree with each other and with the processes' own settings
parsers (the flags and environment the Deployment passes are parsed by the real code)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from api.config import CONFIG_KEYS, parse_config
from api.crd import NODECLAIM_CRD_FILE, WORKSPACE_CRD_FILE
from api.presets import load_presets
from api.skus import load_skus
from reconciler.settings import Settings as ReconcilerSettings
from tests.install.manifests import (
    MANIFESTS,
    NAMESPACE,
    Obj,
    allowed,
    command_module,
    container,
    container_env,
    find,
    install_objects,
    resource_files,
    rules,
)
from webhook.settings import load_settings

DEPLOYMENT = "kaito-controller"


@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    return install_objects()


@pytest.fixture(scope="module")
def deployment(objs: list[Obj]) -> Obj:
    return find(objs, "Deployment", DEPLOYMENT)


def test_the_kustomization_installs_everything_but_the_test_only_nodeclaim_crd(
    objs: list[Obj],
) -> None:
    for path in resource_files():
        assert path.is_file(), f"{path} is listed in kustomization.yaml but missing"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "workspaces.kaito.sh"),
        ("ServiceAccount", DEPLOYMENT),
        ("Role", DEPLOYMENT),
        ("RoleBinding", DEPLOYMENT),
        ("ClusterRole", DEPLOYMENT),
        ("ClusterRoleBinding", DEPLOYMENT),
        ("ConfigMap", "kaito-config"),
        ("Service", "kaito-webhook"),
        ("Deployment", DEPLOYMENT),
        ("PodDisruptionBudget", DEPLOYMENT),
        ("MutatingWebhookConfiguration", "kaito-workspace-webhook"),
        ("ValidatingWebhookConfiguration", "kaito-workspace-webhook"),
    } == kinds
    names = {p.name for p in resource_files()}
    assert WORKSPACE_CRD_FILE in names
    # Karpenter owns nodeclaims.karpenter.sh on a real cluster; ours is a minimal test copy.
    assert NODECLAIM_CRD_FILE not in names
    namespaced = [
        o
        for o in objs
        if o["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole"}
        and not o["kind"].endswith(("WebhookConfiguration", "ClusterRoleBinding"))
    ]
    assert {"Deployment", "Service", "Role", "RoleBinding"} <= {o["kind"] for o in namespaced}
    for o in namespaced:
        assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]


def test_the_controller_pod_is_hardened(deployment: Obj) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == DEPLOYMENT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert [c["name"] for c in pod["containers"]] == ["webhook", "reconciler"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert "privileged" not in sc
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, (c["name"], kind)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, c["name"]
        assert "emptyDir" in volumes[tmp[0]["name"]]
        assert c["image"].startswith("ghcr.io/kaito-py/controller:")
        assert not c["image"].endswith(":latest")


def _ports(c: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def test_the_webhook_container_settings_match_the_other_objects(
    objs: list[Obj], deployment: Obj
) -> None:
    c = container(deployment, "webhook")
    assert command_module(c) == "webhook"
    env = container_env(c)
    settings = load_settings(c.get("args") or [], env)  # the webhook's own parser
    assert settings.kubeconfig is None  # in-cluster service account
    assert not settings.register  # configurations come from the manifests
    assert settings.tls_cert_file is None  # the certificate manager keeps them
    assert _ports(c)["webhook"] == settings.port
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["scheme"] == "HTTPS"
        assert get["port"] == "webhook"
    config = find(objs, "ConfigMap", "kaito-config")
    assert (settings.config_namespace, settings.config_name) == (
        config["metadata"]["namespace"],
        config["metadata"]["name"],
    )

    certs = settings.certs  # the certificate manager's, nested in the webhook's settings
    service = find(objs, "Service", "kaito-webhook")
    assert certs.namespace == service["metadata"]["namespace"] == NAMESPACE
    assert certs.service_name == service["metadata"]["name"]
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["port"] == 443
    assert svc_port["targetPort"] == "webhook"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()

    for kind, names in (
        ("MutatingWebhookConfiguration", certs.mutating_webhook_configurations),
        ("ValidatingWebhookConfiguration", certs.validating_webhook_configurations),
    ):
        assert names == (settings.webhook_name,)
        wc = find(objs, kind, settings.webhook_name)
        assert wc["webhooks"], f"{kind} {settings.webhook_name} has no webhooks"
        for hook in wc["webhooks"]:
            assert hook["failurePolicy"] == "Fail"
            assert 1 <= hook["timeoutSeconds"] <= 10
            assert hook["sideEffects"] == "None"
            ref = hook["clientConfig"]["service"]
            assert (ref["namespace"], ref["name"], ref["port"]) == (
                NAMESPACE,
                certs.service_name,
                svc_port["port"],
            )

    role = rules(objs, "Role", DEPLOYMENT)
    cluster = rules(objs, "ClusterRole", DEPLOYMENT)
    # certs/kube.py: the Secret by name; configurations by name; webhook/kube.py: ConfigMap, nodes
    for verb in ("get", "patch"):
        assert allowed(role, "", "secrets", verb, certs.secret_name)
        for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            assert allowed(
                cluster, "admissionregistration.k8s.io", resource, verb, settings.webhook_name
            )
    assert allowed(role, "", "secrets", "create")
    assert allowed(role, "", "configmaps", "get", settings.config_name)
    assert allowed(cluster, "", "nodes", "get", "any-node")


def test_the_reconciler_container_settings_match_the_other_objects(
    objs: list[Obj], deployment: Obj
) -> None:
    c = container(deployment, "reconciler")
    assert command_module(c) == "reconciler"
    env = container_env(c, pod="kaito-controller-abc")
    settings = ReconcilerSettings.from_sources(c.get("args") or [], env)
    assert settings.kubeconfig == ""  # in-cluster service account
    assert settings.namespace == ""  # every namespace
    assert settings.leader_elect is True
    assert settings.effective_identity == "kaito-controller-abc"
    assert _ports(c)["metrics"] == settings.metrics_port
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "metrics"
        assert c[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert settings.lease_namespace == NAMESPACE
    assert (settings.config_namespace or settings.lease_namespace) == NAMESPACE
    assert settings.config_name == "kaito-config"
    role = rules(objs, "Role", DEPLOYMENT)
    for verb in ("get", "update"):
        assert allowed(role, "coordination.k8s.io", "leases", verb, settings.lease_name)
    assert allowed(role, "coordination.k8s.io", "leases", "create")
    for verb in ("list", "watch"):
        assert allowed(role, "", "configmaps", verb, settings.config_name)


def test_rbac_has_no_wildcards_and_keeps_secrets_in_the_namespace(objs: list[Obj]) -> None:
    for kind in ("Role", "ClusterRole"):
        assert rules(objs, kind, DEPLOYMENT), f"the {kind} {DEPLOYMENT} has no rules"
        for rule in rules(objs, kind, DEPLOYMENT):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(key) or []), (kind, rule)
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(
                rule["verbs"]
            ), rule
            assert "nonResourceURLs" not in rule
            for resource in rule["resources"]:
                assert "/" not in resource or resource in {
                    "workspaces/status",
                    "workspaces/finalizers",
                }, resource
    cluster = rules(objs, "ClusterRole", DEPLOYMENT)
    for resource in ("secrets", "leases", "namespaces", "serviceaccounts"):
        assert not any(resource in r["resources"] for r in cluster), resource
    # inference.config: users' ConfigMaps are read (get, list, watch), never written.
    assert allowed(cluster, "", "configmaps", "watch")
    for verb in ("create", "update", "patch", "delete"):
        assert not allowed(cluster, "", "configmaps", verb), verb
    assert not any(g.startswith("rbac") for r in cluster for g in r["apiGroups"]), (
        "the controller never edits RBAC"
    )
    # read-only kinds
    for group, resource in (("", "pods"), ("", "nodes")):
        for verb in ("create", "update", "patch", "delete"):
            assert not allowed(cluster, group, resource, verb), (resource, verb)
    # Workspaces are users' objects: never created or deleted by the controller.
    for verb in ("create", "delete", "update"):
        assert not allowed(cluster, "kaito.sh", "workspaces", verb)
    # Bindings name the ServiceAccount in kaito-system and the role of the same kind.
    for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        binding = find(objs, kind, DEPLOYMENT)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": DEPLOYMENT,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": DEPLOYMENT, "namespace": NAMESPACE}
        ]


def test_every_rbac_rule_says_which_calls_need_it(objs: list[Obj]) -> None:
    text = (MANIFESTS / "controller" / "rbac.yaml").read_text()
    # Each "  - apiGroups:" rule item is preceded by a comment line.
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("  - apiGroups:")]
    # Every rule of the parsed Roles is one of those lines (none written another way, none
    # missed): the check below cannot pass on a file it does not recognise.
    parsed = rules(objs, "Role", DEPLOYMENT) + rules(objs, "ClusterRole", DEPLOYMENT)
    assert len(starts) == len(parsed) > 0, (len(starts), len(parsed))
    for i in starts:
        assert i > 0, "rbac.yaml starts with a rule, not its comment"
        assert lines[i - 1].lstrip().startswith("#"), f"rbac.yaml:{i + 1} has no comment"


def test_the_pod_disruption_budget_keeps_one_controller(objs: list[Obj], deployment: Obj) -> None:
    pdb = find(objs, "PodDisruptionBudget", DEPLOYMENT)
    assert pdb["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


# ---------------------------------------------------------------------------- the ConfigMap

CONFIG_FILE = MANIFESTS / "controller" / "kaito-config.yaml"
_COMMENTED_KEY = re.compile(r"^  # (\w+): (.*)$")


def _commented_examples() -> dict[str, str]:
    """``# key: value`` (and ``# key: |`` blocks) uncommented, as a ConfigMap's data."""
    lines = CONFIG_FILE.read_text().splitlines()
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _COMMENTED_KEY.match(lines[i])
        if m and m.group(1) in CONFIG_KEYS and m.group(2):
            block = [lines[i][4:]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  #   "):
                i += 1
                block.append(lines[i][4:])
            out.update(yaml.safe_load("\n".join(block)))
        i += 1
    return out


def test_the_admin_configmap_documents_every_setting_and_parses(objs: list[Obj]) -> None:
    data: dict[str, Any] = find(objs, "ConfigMap", "kaito-config")["data"]
    presets, skus = load_presets(), load_skus()
    parse_config(data, presets=presets, skus=skus)
    text = CONFIG_FILE.read_text()
    examples = _commented_examples()
    assert examples, f"{CONFIG_FILE.name} has no commented `# key: value` examples"
    for key in CONFIG_KEYS:
        # Each key has a paragraph of its own: "# key — what it does ... Default: ...".
        assert re.search(rf"^  # {key} — .*(\n  # .*)*Default: ", text, re.M), key
        assert key in data or key in examples, f"{key} has neither a value nor an example"
    assert set(examples) | set(data) == set(CONFIG_KEYS)
    # Every example, uncommented, is accepted too (alone and all together).
    for key, value in examples.items():
        parse_config({**data, key: value}, presets=presets, skus=skus)
    parse_config({**data, **examples}, presets=presets, skus=skus)
