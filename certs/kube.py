"""The one module of ``certs`` that talks to the Kubernetes API, through the controller's client
(:class:`reconciler.kube.Kube`; the webhook process shares its one client with this module).

:class:`CertKube` reads and writes the certificate Secret and the ``caBundle`` of webhook
configurations. Writes use the field manager ``kaito-py``: the Secret is created with
POST (so two replicas racing get ``AlreadyExists`` and one winner) and updated with server-side
apply carrying ``metadata.resourceVersion`` (optimistic concurrency: a concurrent change gives
HTTP 409); ``caBundle`` is set with server-side apply of just
``webhooks[name].clientConfig.caBundle``.

HTTP failures become :mod:`certs.errors` exceptions whose messages name the object and the fix
(403 → :class:`CertPermissionError` naming the missing RBAC verb, 404 → :class:`CertNotFoundError`,
409 → :class:`CertConflictError`).

Build one from the client you already have::

    kube = CertKube(Kube(load_kubeconfig(path), field_manager=FIELD_MANAGER))
    ...
    await kube.close()   # closes the client (only when this module owns it)

RBAC the webhook's ServiceAccount needs: ``get``, ``create``, ``patch`` on ``secrets`` in its
namespace; ``get``, ``patch`` on ``mutatingwebhookconfigurations`` and
``validatingwebhookconfigurations`` (restrict with ``resourceNames``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp

from certs.errors import (
    CertConflictError,
    CertKubeError,
    CertNotFoundError,
    CertPermissionError,
)
from certs.plan import SECRET_TYPE
from reconciler.errors import ApiError, KubeConfigError
from reconciler.kube import Kube
from reconciler.resources import MUTATING_WEBHOOKS, SECRETS, VALIDATING_WEBHOOKS, Resource

FIELD_MANAGER: Final = "kaito-py"
MUTATING: Final = "MutatingWebhookConfiguration"
VALIDATING: Final = "ValidatingWebhookConfiguration"
WebhookKind = Literal["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

_ADMISSION_API = "admissionregistration.k8s.io/v1"
_RESOURCE: Final[dict[str, Resource]] = {
    MUTATING: MUTATING_WEBHOOKS,
    VALIDATING: VALIDATING_WEBHOOKS,
}
LABELS: Final = {
    "app.kubernetes.io/managed-by": FIELD_MANAGER,
    "app.kubernetes.io/component": "webhook-certificates",
}


@dataclass(frozen=True)
class StoredSecret:
    """A Secret's decoded ``data``, its ``type`` and the ``resourceVersion`` it was read at."""

    data: dict[str, bytes]
    resource_version: str
    type: str = SECRET_TYPE


@dataclass(frozen=True)
class WebhookConfigState:
    """A webhook configuration's webhooks and their decoded ``caBundle`` (``b""`` when unset)."""

    kind: WebhookKind
    name: str
    resource_version: str
    ca_bundles: dict[str, bytes]


def _translate(exc: Exception, *, verb: str, resource: str, what: str, scope: str) -> CertKubeError:
    """Map a client exception to the package's tree, naming ``what`` and the fix."""
    if isinstance(exc, KubeConfigError):
        return CertKubeError(f"cannot {verb} {what}: {exc}")
    if not isinstance(exc, ApiError):
        return CertKubeError(
            f"cannot {verb} {what}: the apiserver is unreachable ({type(exc).__name__}: {exc}); "
            "check the kubeconfig or in-cluster service account and the network"
        )
    status = exc.status
    detail = exc.message.strip()[:300] or exc.reason
    if status == 403:
        return CertPermissionError(
            f"forbidden to {verb} {what}: {detail}. Fix: grant the webhook's ServiceAccount the "
            f"RBAC verb {verb!r} on {resource!r} {scope}",
            status=status,
        )
    if status == 404:
        return CertNotFoundError(f"cannot {verb} {what}: not found ({detail})", status=status)
    if status == 409:
        return CertConflictError(f"cannot {verb} {what}: conflict ({detail})", status=status)
    if status == 401:
        return CertKubeError(
            f"cannot {verb} {what}: unauthorized ({detail}); the credentials were refused — "
            "check the kubeconfig or the ServiceAccount token",
            status=status,
        )
    return CertKubeError(f"cannot {verb} {what}: HTTP {status} {detail}", status=status)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _unb64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


class CertKube:
    """Kubernetes I/O for the certificate manager, over a shared :class:`Kube`."""

    def __init__(
        self,
        kube: Kube,
        *,
        field_manager: str = FIELD_MANAGER,
        request_timeout: float = 15.0,
    ) -> None:
        self.kube = kube
        self.field_manager = field_manager
        self.request_timeout = request_timeout

    async def close(self) -> None:
        """Close the client (for a ``CertKube`` that owns it; a shared one is closed by its
        owner)."""
        await self.kube.close()

    async def _call(
        self,
        call: Awaitable[dict[str, Any] | None],
        *,
        verb: str,
        resource: Resource,
        what: str,
        scope: str,
    ) -> dict[str, Any]:
        try:
            obj = await asyncio.wait_for(call, self.request_timeout)
        except (ApiError, KubeConfigError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(
                exc, verb=verb, resource=resource.plural, what=what, scope=scope
            ) from exc
        if obj is None:
            raise CertNotFoundError(f"cannot {verb} {what}: not found", status=404)
        return obj

    # -- Secret ----------------------------------------------------------------------------------

    @staticmethod
    def _secret_state(obj: Mapping[str, Any]) -> StoredSecret:
        data = obj.get("data") or {}
        return StoredSecret(
            data={k: _unb64(v) for k, v in data.items()},
            resource_version=str(obj["metadata"]["resourceVersion"]),
            type=str(obj.get("type") or "Opaque"),
        )

    def _secret_body(self, namespace: str, name: str, data: Mapping[str, bytes]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
            "type": SECRET_TYPE,
            "data": {k: _b64(v) for k, v in sorted(data.items())},
        }

    async def read_secret(self, namespace: str, name: str) -> StoredSecret | None:
        """The Secret's data, or ``None`` when it does not exist."""
        try:
            obj = await self._call(
                self.kube.get(SECRETS, name, namespace),
                verb="get",
                resource=SECRETS,
                what=f"Secret {namespace}/{name}",
                scope=f"in namespace {namespace!r}",
            )
        except CertNotFoundError:
            return None
        return self._secret_state(obj)

    async def create_secret(
        self, namespace: str, name: str, data: Mapping[str, bytes]
    ) -> StoredSecret:
        """Create the Secret; :class:`CertConflictError` when it already exists (someone won the
        race), :class:`CertNotFoundError` when the namespace does not exist."""
        what = f"Secret {namespace}/{name}"
        try:
            obj = await self._call(
                self.kube.create(
                    self._secret_body(namespace, name, data), field_manager=self.field_manager
                ),
                verb="create",
                resource=SECRETS,
                what=what,
                scope=f"in namespace {namespace!r}",
            )
        except CertNotFoundError as exc:
            raise CertNotFoundError(
                f"{exc}; create namespace {namespace!r} or set the certs namespace setting "
                "to an existing one",
                status=exc.status,
            ) from exc
        return self._secret_state(obj)

    async def apply_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        resource_version: str,
    ) -> StoredSecret:
        """Server-side apply ``data``, only if the Secret is still at ``resource_version``
        (:class:`CertConflictError` otherwise)."""
        body = self._secret_body(namespace, name, data)
        body["metadata"]["resourceVersion"] = resource_version
        obj = await self._call(
            self.kube.apply(body, field_manager=self.field_manager),
            verb="patch",
            resource=SECRETS,
            what=f"Secret {namespace}/{name}",
            scope=f"in namespace {namespace!r}",
        )
        return self._secret_state(obj)

    # -- webhook configurations ------------------------------------------------------------------

    async def read_webhook_config(self, kind: WebhookKind, name: str) -> WebhookConfigState:
        """Each webhook's current caBundle; :class:`CertNotFoundError` (with the fix) if the
        configuration does not exist."""
        try:
            obj = await self._call(
                self.kube.get(_RESOURCE[kind], name),
                verb="get",
                resource=_RESOURCE[kind],
                what=f"{kind} {name}",
                scope=f"(resourceNames: [{name!r}])",
            )
        except CertNotFoundError as exc:
            raise CertNotFoundError(
                f"{exc}; apply the webhook configuration first, or remove {name!r} from the "
                f"certs setting listing {kind}s",
                status=exc.status,
            ) from exc
        webhooks = obj.get("webhooks") or []
        return WebhookConfigState(
            kind=kind,
            name=name,
            resource_version=str(obj["metadata"]["resourceVersion"]),
            ca_bundles={
                str(w["name"]): _unb64((w.get("clientConfig") or {}).get("caBundle"))
                for w in webhooks
            },
        )

    async def apply_ca_bundle(self, state: WebhookConfigState, ca_bundle_pem: bytes) -> None:
        """Set ``caBundle`` of every webhook in ``state`` (server-side apply, only if the object
        is still at ``state.resource_version``)."""
        body = {
            "apiVersion": _ADMISSION_API,
            "kind": state.kind,
            "metadata": {"name": state.name, "resourceVersion": state.resource_version},
            "webhooks": [
                {"name": w, "clientConfig": {"caBundle": _b64(ca_bundle_pem)}}
                for w in state.ca_bundles
            ],
        }
        await self._call(
            self.kube.apply(body, field_manager=self.field_manager),
            verb="patch",
            resource=_RESOURCE[state.kind],
            what=f"{state.kind} {state.name}",
            scope=f"(resourceNames: [{state.name!r}])",
        )
