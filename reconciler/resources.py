"""The Kubernetes resources the controller processes read and write, as plain data (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """One API resource: group, version, plural and kind, and whether it lives in a namespace."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x/status``."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


WORKSPACES = Resource("kaito.sh", "v1alpha1", "workspaces", "Workspace")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NODECLAIMS = Resource("karpenter.sh", "v1", "nodeclaims", "NodeClaim", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
SECRETS = Resource("", "v1", "secrets", "Secret")
MUTATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
VALIDATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)

BY_KIND = {
    r.kind: r
    for r in (
        WORKSPACES,
        DEPLOYMENTS,
        STATEFULSETS,
        SERVICES,
        PODS,
        NODES,
        NODECLAIMS,
        CONFIGMAPS,
        EVENTS,
        LEASES,
        SECRETS,
        MUTATING_WEBHOOKS,
        VALIDATING_WEBHOOKS,
    )
}


def resource_of(obj: dict[str, object]) -> Resource:
    """The resource of a manifest, from its ``kind`` (one of ours)."""
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in BY_KIND:
        raise KeyError(f"kind {kind!r} is not one the controller manages; known: {sorted(BY_KIND)}")
    return BY_KIND[kind]
