"""The one module of ``certs`` that talks to the Kubernetes API (official ``kubernetes`` client).

:class:`CertKube` reads and writes the certificate Secret and the ``caBundle`` of webhook
configurations. The client is blocking, so every call runs in a worker thread
(``asyncio.to_thread``). Writes use the field manager ``kaito-py``: the Secret is created with
POST (so two replicas racing get ``AlreadyExists`` and one winner) and updated with server-side
apply carrying ``metadata.resourceVersion`` (optimistic concurrency: a concurrent change gives
HTTP 409); ``caBundle`` is set with server-side apply of just
``webhooks[name].clientConfig.caBundle``.

HTTP failures become :mod:`certs.errors` exceptions whose messages name the object and the fix
(403 → :class:`CertPermissionError` naming the missing RBAC verb, 404 → :class:`CertNotFoundError`,
409 → :class:`CertConflictError`).

Build one from an ``ApiClient`` you already have, or::

    kube = CertKube.from_kubeconfig("/path/to/kubeconfig")   # or CertKube.in_cluster()
    ...
    kube.close()

RBAC the webhook's ServiceAccount needs: ``get``, ``create``, ``patch`` on ``secrets`` in its
namespace; ``get``, ``patch`` on ``mutatingwebhookconfigurations`` and
``validatingwebhookconfigurations`` (restrict with ``resourceNames``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from certs.errors import (
    CertConflictError,
    CertKubeError,
    CertNotFoundError,
    CertPermissionError,
)
from certs.plan import SECRET_TYPE

FIELD_MANAGER: Final = "kaito-py"
MUTATING: Final = "MutatingWebhookConfiguration"
VALIDATING: Final = "ValidatingWebhookConfiguration"
WebhookKind = Literal["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

_APPLY = "application/apply-patch+yaml"
_ADMISSION_API = "admissionregistration.k8s.io/v1"
_RESOURCE = {
    MUTATING: "mutatingwebhookconfigurations",
    VALIDATING: "validatingwebhookconfigurations",
}
LABELS: Final = {
    "app.kubernetes.io/managed-by": FIELD_MANAGER,
    "app.kubernetes.io/component": "webhook-certificates",
}

T = TypeVar("T")


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


def _message(exc: ApiException) -> str:
    body: object = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return body.strip()[:300]
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    return str(exc.reason or "")


def _translate(exc: Exception, *, verb: str, resource: str, what: str, scope: str) -> CertKubeError:
    """Map a client exception to the package's tree, naming ``what`` and the fix."""
    if not isinstance(exc, ApiException):
        return CertKubeError(
            f"cannot {verb} {what}: the apiserver is unreachable ({type(exc).__name__}: {exc}); "
            "check the kubeconfig or in-cluster service account and the network"
        )
    status = int(exc.status or 0)
    detail = _message(exc)
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
    """Kubernetes I/O for the certificate manager. Thread-safe; methods are coroutines."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        request_timeout: float = 15.0,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.request_timeout = request_timeout
        self._core = k8s.CoreV1Api(api_client)
        self._admission = k8s.AdmissionregistrationV1Api(api_client)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> CertKube:
        """Use a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``)."""
        api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context
        )
        return cls(api_client)

    @classmethod
    def in_cluster(cls) -> CertKube:
        """Use the Pod's ServiceAccount."""
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        return cls(k8s.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        what: str,
        scope: str,
        **kwargs: Any,
    ) -> dict[str, Any]:
        def blocking() -> dict[str, Any]:
            response = fn(
                *args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs
            )
            try:
                payload = response.data
            finally:
                response.release_conn()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise CertKubeError(f"cannot {verb} {what}: unexpected answer {payload[:200]!r}")
            return parsed

        try:
            return await asyncio.to_thread(blocking)
        except CertKubeError:
            raise
        except Exception as exc:  # ApiException, urllib3 and socket errors
            raise _translate(exc, verb=verb, resource=resource, what=what, scope=scope) from exc

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
                self._core.read_namespaced_secret,
                name,
                namespace,
                verb="get",
                resource="secrets",
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
                self._core.create_namespaced_secret,
                namespace,
                self._secret_body(namespace, name, data),
                field_manager=self.field_manager,
                verb="create",
                resource="secrets",
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
            self._core.patch_namespaced_secret,
            name,
            namespace,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=_APPLY,
            verb="patch",
            resource="secrets",
            what=f"Secret {namespace}/{name}",
            scope=f"in namespace {namespace!r}",
        )
        return self._secret_state(obj)

    # -- webhook configurations ------------------------------------------------------------------

    def _webhook_fns(self, kind: WebhookKind) -> tuple[Callable[..., Any], Callable[..., Any]]:
        if kind == MUTATING:
            return (
                self._admission.read_mutating_webhook_configuration,
                self._admission.patch_mutating_webhook_configuration,
            )
        return (
            self._admission.read_validating_webhook_configuration,
            self._admission.patch_validating_webhook_configuration,
        )

    async def read_webhook_config(self, kind: WebhookKind, name: str) -> WebhookConfigState:
        """Each webhook's current caBundle; :class:`CertNotFoundError` (with the fix) if the
        configuration does not exist."""
        read, _patch = self._webhook_fns(kind)
        try:
            obj = await self._call(
                read,
                name,
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
        _read, patch = self._webhook_fns(state.kind)
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
            patch,
            state.name,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=_APPLY,
            verb="patch",
            resource=_RESOURCE[state.kind],
            what=f"{state.kind} {state.name}",
            scope=f"(resourceNames: [{state.name!r}])",
        )
