"""The webhook's only Kubernetes I/O: read Nodes, the admin ConfigMap and the Workspaces'
``inference.config`` ConfigMaps, dry-run the Pod template, and (out-of-cluster mode) apply or
delete the webhook configurations.

Calls go through the controller's one client, :class:`reconciler.kube.Kube` (plain dicts, every
kubeconfig the official client accepts); the webhook process builds one and shares it with its
certificate manager (``certs.kube.CertKube``). Failures become :class:`webhook.errors.KubeError`
naming the object.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from reconciler.errors import ApiError, KubeConfigError
from reconciler.kube import Credentials, load_in_cluster, load_kubeconfig
from reconciler.kube import Kube as Client
from reconciler.resources import CONFIGMAPS, MUTATING_WEBHOOKS, NODES, VALIDATING_WEBHOOKS
from webhook.errors import KubeError

FIELD_MANAGER = "kaito-webhook"
T = TypeVar("T")


def credentials(kubeconfig: Path | None, env: Mapping[str, str] | None = None) -> Credentials:
    """From a kubeconfig file, or the in-cluster service account when it is None."""
    try:
        if kubeconfig is not None:
            return load_kubeconfig(kubeconfig)
        return load_in_cluster(os.environ if env is None else env)
    except KubeConfigError as exc:
        raise KubeError(
            f"cannot load Kubernetes credentials: {exc}; fix: pass --kubeconfig, or --no-kube "
            "to run without the API"
        ) from exc


class Kube:
    """A thin async facade over the few API calls the webhook makes."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def connect(cls, kubeconfig: Path | None) -> Kube:
        """From a kubeconfig file, or the in-cluster service account when it is None (the client
        opens on its first call; ``await kube.open()`` to load the credentials now)."""
        client = Client(
            credentials(kubeconfig), field_manager=FIELD_MANAGER, user_agent="kaito-webhook"
        )
        return cls(client)

    async def open(self) -> None:
        """Load the credentials now (runs an exec plugin): a bad kubeconfig fails at start."""
        await self._call(self.client.open(), "loading the Kubernetes credentials")

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    async def _call(call: Awaitable[T], what: str) -> T:
        try:
            return await call
        except KubeConfigError as exc:
            raise KubeError(f"{what}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(f"{what}: Kubernetes API call failed: {exc}") from exc

    async def get_node(self, name: str, timeout_s: float) -> dict[str, Any] | None:
        """The Node as a dict, or None when it does not exist."""
        what = f"reading node {name}"
        try:
            return await self._call(self.client.get(NODES, name, timeout_s=timeout_s), what)
        except ApiError as exc:
            raise KubeError(f"{what}: HTTP {exc.status} {exc.reason}") from exc

    async def get_configmap(
        self, namespace: str, name: str, timeout_s: float = 10.0
    ) -> tuple[str, dict[str, Any]] | None:
        """``(resourceVersion, data)`` of a ConfigMap, or None when it does not exist."""
        what = f"reading ConfigMap {namespace}/{name}"
        try:
            cm = await self._call(
                self.client.get(CONFIGMAPS, name, namespace, timeout_s=timeout_s), what
            )
        except ApiError as exc:
            raise KubeError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        if cm is None:
            return None
        return str(cm["metadata"].get("resourceVersion", "")), dict(cm.get("data") or {})

    async def apply_webhook_configuration(self, obj: dict[str, Any]) -> None:
        """Server-side apply of a Mutating- or ValidatingWebhookConfiguration."""
        what = f"applying {obj['kind']} {obj['metadata']['name']}"
        try:
            await self._call(self.client.apply(obj, timeout_s=30), what)
        except ApiError as exc:
            raise KubeError(f"{what}: HTTP {exc.status} {exc.message}") from exc

    async def dry_run_apply(
        self, deployment: dict[str, Any], field_manager: str, timeout_s: float
    ) -> str:
        """Server-side apply ``deployment`` with ``dryRun=All``; returns the apiserver's reason
        for refusing it (HTTP 400, 422 or 500), ``""`` when it would be accepted. Other
        failures (unreachable, forbidden) raise ``KubeError``."""
        call = self.client.apply(
            deployment, field_manager=field_manager, dry_run=True, timeout_s=timeout_s
        )
        try:
            await self._call(call, "dry run of the template")
        except ApiError as exc:
            if exc.status in (400, 422, 500):
                return exc.message or exc.reason or f"HTTP {exc.status}"
            raise KubeError(f"dry run of the template: HTTP {exc.status} {exc.reason}") from exc
        return ""

    async def webhook_configurations_present(self, name: str) -> bool:
        """Whether both the Mutating- and the ValidatingWebhookConfiguration ``name`` exist."""
        for resource in (MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS):
            what = f"reading webhook configuration {name}"
            try:
                if await self._call(self.client.get(resource, name, timeout_s=30), what) is None:
                    return False
            except ApiError as exc:
                raise KubeError(f"{what}: HTTP {exc.status}") from exc
        return True

    async def delete_webhook_configurations(self, name: str) -> None:
        """Delete both configurations named ``name`` (absent ones are fine)."""
        for resource in (MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS):
            what = f"deleting webhook configuration {name}"
            try:
                await self._call(self.client.delete(resource, name), what)
            except ApiError as exc:
                raise KubeError(f"{what}: HTTP {exc.status}") from exc


__all__ = ["FIELD_MANAGER", "Kube", "credentials"]
