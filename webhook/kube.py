"""The webhook's only Kubernetes I/O: read Nodes, the admin ConfigMap and the Workspaces'
``inference.config`` ConfigMaps, and (out-of-cluster mode) apply or delete the webhook
configurations.

Calls go through the official ``kubernetes`` client in a worker thread and return plain dicts
(``_preload_content=False``, JSON decoded here), so the rest of the package sees JSON, not client
model classes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from webhook.errors import KubeError

FIELD_MANAGER = "kaito-webhook"
_config: Any = config  # the kubernetes client is untyped


def _decode(response: Any) -> Any:
    return json.loads(response.data)


def _status_message(exc: ApiException) -> str:
    """The ``message`` of the Status an ApiException carries, else its reason."""
    try:
        message = json.loads(exc.body or b"{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")


class Kube:
    """A thin async facade over the few API calls the webhook makes."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: Path | None) -> Kube:
        """From a kubeconfig file, or the in-cluster service account when it is None."""
        try:
            if kubeconfig is not None:
                api_client = _config.new_client_from_config(config_file=str(kubeconfig))
            else:
                configuration = client.Configuration()
                _config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or "the in-cluster service account"
            raise KubeError(
                f"cannot load Kubernetes credentials from {where}: {exc}; fix: pass "
                "--kubeconfig, or --no-kube to run without the API"
            ) from exc
        return cls(api_client)

    def close(self) -> None:
        self.api_client.close()

    async def _call(
        self, fn: Any, *args: Any, request_timeout: float | None = None, **kw: Any
    ) -> Any:
        if request_timeout is not None:
            kw["_request_timeout"] = request_timeout
        try:
            return await asyncio.to_thread(fn, *args, _preload_content=False, **kw)
        except ApiException:
            raise
        except Exception as exc:  # urllib3 and socket errors
            raise KubeError(f"Kubernetes API call failed: {exc}") from exc

    async def get_node(self, name: str, timeout_s: float) -> dict[str, Any] | None:
        """The Node as a dict, or None when it does not exist."""
        try:
            node: dict[str, Any] = _decode(
                await self._call(self.core.read_node, name, request_timeout=timeout_s)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"reading node {name}: HTTP {exc.status} {exc.reason}") from exc
        return node

    async def get_configmap(
        self, namespace: str, name: str, timeout_s: float = 10.0
    ) -> tuple[str, dict[str, Any]] | None:
        """``(resourceVersion, data)`` of a ConfigMap, or None when it does not exist."""
        try:
            cm = _decode(
                await self._call(
                    self.core.read_namespaced_config_map, name, namespace, request_timeout=timeout_s
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(
                f"reading ConfigMap {namespace}/{name}: HTTP {exc.status} {exc.reason}"
            ) from exc
        return str(cm["metadata"].get("resourceVersion", "")), dict(cm.get("data") or {})

    async def apply_webhook_configuration(self, obj: dict[str, Any]) -> None:
        """Server-side apply of a Mutating- or ValidatingWebhookConfiguration."""
        fn = (
            self.admission.patch_mutating_webhook_configuration
            if obj["kind"] == "MutatingWebhookConfiguration"
            else self.admission.patch_validating_webhook_configuration
        )
        try:
            await self._call(
                fn,
                obj["metadata"]["name"],
                obj,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
                request_timeout=30,
            )
        except ApiException as exc:
            raise KubeError(
                f"applying {obj['kind']} {obj['metadata']['name']}: HTTP {exc.status} {exc.body}"
            ) from exc

    async def dry_run_apply(
        self, deployment: dict[str, Any], field_manager: str, timeout_s: float
    ) -> str:
        """Server-side apply ``deployment`` with ``dryRun=All``; returns the apiserver's reason
        for refusing it (HTTP 400, 422 or 500), ``""`` when it would be accepted. Other
        failures (unreachable, forbidden) raise ``KubeError``."""
        meta = deployment["metadata"]
        try:
            await self._call(
                self.apps.patch_namespaced_deployment,
                meta["name"],
                meta["namespace"],
                deployment,
                field_manager=field_manager,
                force=True,
                dry_run="All",
                _content_type="application/apply-patch+yaml",
                request_timeout=timeout_s,
            )
        except ApiException as exc:
            if exc.status in (400, 422, 500):
                return _status_message(exc)
            raise KubeError(f"dry run of the template: HTTP {exc.status} {exc.reason}") from exc
        return ""

    async def webhook_configurations_present(self, name: str) -> bool:
        """Whether both the Mutating- and the ValidatingWebhookConfiguration ``name`` exist."""
        for fn in (
            self.admission.read_mutating_webhook_configuration,
            self.admission.read_validating_webhook_configuration,
        ):
            try:
                await self._call(fn, name, request_timeout=30)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise KubeError(f"reading webhook configuration {name}: HTTP {exc.status}") from exc
        return True

    async def delete_webhook_configurations(self, name: str) -> None:
        """Delete both configurations named ``name`` (absent ones are fine)."""
        for fn in (
            self.admission.delete_mutating_webhook_configuration,
            self.admission.delete_validating_webhook_configuration,
        ):
            try:
                await self._call(fn, name, request_timeout=30)
            except ApiException as exc:
                if exc.status != 404:
                    raise KubeError(
                        f"deleting webhook configuration {name}: HTTP {exc.status}"
                    ) from exc
