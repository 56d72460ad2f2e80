"""The Deployment a template Workspace renders, for a server-side dry run (pure).

The webhook's own rules cannot know every field of a Pod spec; the apiserver does. Before a
template Workspace is admitted, ``/validate`` applies this Deployment with ``dryRun=All`` (the
same server-side apply the reconciler makes later), so ``kubectl apply`` refuses an unknown
container field, duplicate container names or ``nvidia.com/gpu: "lots"`` with the apiserver's
own message, instead of the reconciler meeting it after a GPU node was provisioned.
"""

from __future__ import annotations

from typing import Any

from webhook.review import AdmissionRequest

LABEL_WORKSPACE = "kaito.sh/workspace"
FIELD_MANAGER = "kaito-webhook-dry-run"


def _template(obj: dict[str, Any] | None) -> Any:
    inference = (obj or {}).get("inference")
    return inference.get("template") if isinstance(inference, dict) else None


def probe_deployment(request: AdmissionRequest) -> dict[str, Any] | None:
    """The Deployment to dry-run for this request; None when there is nothing to check (not a
    template Workspace, or an update that keeps the template)."""
    if not request.is_workspace or request.operation not in ("CREATE", "UPDATE"):
        return None
    template = _template(request.object)
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return None  # the webhook's own rules report a missing or malformed template
    if request.operation == "UPDATE" and template == _template(request.old_object):
        return None
    name = str(((request.object or {}).get("metadata") or {}).get("name") or request.name)
    meta: Any = template.get("metadata") or {}
    labels: Any = meta.get("labels") or {} if isinstance(meta, dict) else None
    if not isinstance(labels, dict):
        return None  # the webhook's own rules (the CRD schema) report a malformed template
    selector = {LABEL_WORKSPACE: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": request.namespace, "labels": selector},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                **template,
                "metadata": {**meta, "labels": {**labels, **selector}},
            },
        },
    }
