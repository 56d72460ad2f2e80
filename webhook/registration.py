"""The Mutating- and ValidatingWebhookConfiguration objects (pure builders).

``url_configurations`` points the apiserver at ``https://HOST:PORT/mutate`` and ``/validate``
(the out-of-cluster mode); ``service_configurations`` at a Service in the cluster. Both carry
the CA bundle that signed the serving certificate.
"""

from __future__ import annotations

import base64
from typing import Any

from api import workspace as ws

MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
MUTATING_WEBHOOK = "mutate.workspaces.kaito.sh"
VALIDATING_WEBHOOK = "validate.workspaces.kaito.sh"


def _rules() -> list[dict[str, Any]]:
    return [
        {
            "apiGroups": [ws.GROUP],
            "apiVersions": [ws.VERSION],
            "resources": [ws.PLURAL],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]


def _webhook(name: str, client_config: dict[str, Any], timeout: int) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": client_config,
        "rules": _rules(),
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": timeout,
    }


def _pair(
    name: str, mutate_cc: dict[str, Any], validate_cc: dict[str, Any], timeout: int
) -> list[dict[str, Any]]:
    mutating = _webhook(MUTATING_WEBHOOK, mutate_cc, timeout)
    mutating["reinvocationPolicy"] = "Never"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [mutating],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [_webhook(VALIDATING_WEBHOOK, validate_cc, timeout)],
        },
    ]


def ca_bundle_b64(ca_pem: bytes) -> str:
    return base64.b64encode(ca_pem).decode()


def url_configurations(
    name: str, host: str, port: int, ca_pem: bytes, *, timeout: int = 5
) -> list[dict[str, Any]]:
    """Configurations that reach the webhook by URL (out-of-cluster mode)."""
    base = f"https://{host}:{port}"
    bundle = ca_bundle_b64(ca_pem)
    return _pair(
        name,
        {"url": base + MUTATE_PATH, "caBundle": bundle},
        {"url": base + VALIDATE_PATH, "caBundle": bundle},
        timeout,
    )


def service_configurations(
    name: str,
    namespace: str,
    service: str,
    ca_pem: bytes | None = None,
    *,
    port: int = 443,
    timeout: int = 5,
) -> list[dict[str, Any]]:
    """Configurations that reach the webhook through a Service (in-cluster mode); without a
    CA the caBundle is left for the certificate manager to inject."""

    def cc(path: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": {"namespace": namespace, "name": service, "path": path, "port": port}
        }
        if ca_pem is not None:
            out["caBundle"] = ca_bundle_b64(ca_pem)
        return out

    return _pair(name, cc(MUTATE_PATH), cc(VALIDATE_PATH), timeout)
