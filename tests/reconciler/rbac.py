"""The least privilege the reconciler needs, as RBAC objects (what the install manifests grant).

Server-side apply is a PATCH, but one that creates the object is authorized as ``create`` too.

``CLUSTER_RULES`` go in a ClusterRole (bound cluster-wide); ``NAMESPACE_RULES`` in a Role in
the reconciler's own namespace (the Lease and the admin ConfigMap). With ``--namespace`` the
Workspace, Deployment, StatefulSet, Service and Event rules could move to a Role there, but
Pods are listed across namespaces (by node) to find free GPUs, and Nodes and NodeClaims are
cluster-scoped anyway.
"""

from __future__ import annotations

from typing import Any

CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces/status"], "verbs": ["patch"]},
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces/finalizers"], "verbs": ["update"]},
    {
        "apiGroups": ["karpenter.sh"],
        "resources": ["nodeclaims"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # inference.config: any (unlabelled) ConfigMap a Workspace names, read-only.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
]

NAMESPACE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
]


def manifests(name: str, namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole(+Binding) and Role(+Binding) for a reconciler ``name``."""
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{namespace}-{name}"},
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{namespace}-{name}",
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": NAMESPACE_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject,
        },
    ]
