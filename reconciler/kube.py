"""The one module that talks to the Kubernetes API: an asyncio client on aiohttp.

It loads credentials from a kubeconfig (client certificates, bearer tokens, token files) or the
in-cluster service account, and offers what the reconciler needs: get, list (paginated), watch
(a stream of events), server-side apply under one field manager (``force`` for our own fields),
apply to the status subresource, create, replace (optimistic concurrency, for the Lease), delete
and Events. Every request is counted through an ``on_request(verb, resource, code)`` hook.

Exec credential plugins and auth-provider kubeconfigs are not supported: use a token or client
certificate kubeconfig, or run in a cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from reconciler.errors import ApiError, GoneError, KubeConfigError, api_error
from reconciler.resources import EVENTS, Resource, resource_of

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"

OnRequest = Callable[[str, str, int], None]
"""Called after every request with (verb, resource, HTTP status or 0 for a network error)."""


@dataclass(frozen=True)
class Credentials:
    """How to reach and authenticate to one apiserver."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    insecure: bool = False
    namespace: str | None = None
    """The namespace the credentials belong to (in-cluster: the pod's)."""

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        else:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_data is not None and self.key_data is not None:
            # ssl needs files: write them to a private temporary directory and remove it at once.
            with tempfile.TemporaryDirectory(prefix="kaito-kc-") as tmp:
                cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
                for path, data in ((cert, self.cert_data), (key, self.key_data)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value)
    except ValueError as exc:
        raise KubeConfigError(f"{what} is not valid base64: {exc}") from exc


def _rel(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def load_kubeconfig(path: str | Path, context: str = "") -> Credentials:
    """Credentials from a kubeconfig file (and the named or current context)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"kubeconfig {path} cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(section[:-1])
                return inner if isinstance(inner, dict) else {}
        raise KubeConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise KubeConfigError(
            f"kubeconfig {path} has no current-context; pass --context with one of its contexts"
        )
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", str(ctx.get("cluster", "")))
    user = named("users", str(ctx.get("user", ""))) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(
            f"kubeconfig {path}, user {ctx.get('user')!r}: exec and auth-provider credentials are "
            "not supported; use a kubeconfig with a token or a client certificate, or run "
            "in-cluster"
        )
    base = path.parent
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"kubeconfig {path}: cluster of context {ctx_name!r} has no server")
    return Credentials(
        server=server.rstrip("/"),
        ca_file=_rel(base, cluster["certificate-authority"])
        if cluster.get("certificate-authority")
        else None,
        ca_data=_b64(cluster["certificate-authority-data"], "certificate-authority-data")
        if cluster.get("certificate-authority-data")
        else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        cert_file=_rel(base, user["client-certificate"])
        if user.get("client-certificate")
        else None,
        key_file=_rel(base, user["client-key"]) if user.get("client-key") else None,
        cert_data=_b64(user["client-certificate-data"], "client-certificate-data")
        if user.get("client-certificate-data")
        else None,
        key_data=_b64(user["client-key-data"], "client-key-data")
        if user.get("client-key-data")
        else None,
        token=user.get("token") or None,
        token_file=_rel(base, user["tokenFile"]) if user.get("tokenFile") else None,
        namespace=ctx.get("namespace") or None,
    )


def load_in_cluster(env: Mapping[str, str], sa_dir: Path = SA_DIR) -> Credentials:
    """Credentials of the pod's service account."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "no kubeconfig and not in a cluster (KUBERNETES_SERVICE_HOST is unset); pass "
            "--kubeconfig or set KUBECONFIG"
        )
    if not (sa_dir / "token").exists():
        raise KubeConfigError(f"in-cluster: {sa_dir / 'token'} is missing; mount a service account")
    if ":" in host:
        host = f"[{host}]"
    ns_file = sa_dir / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(sa_dir / "ca.crt"),
        token_file=str(sa_dir / "token"),
        namespace=ns_file.read_text().strip() if ns_file.exists() else None,
    )


def load_credentials(kubeconfig: str, context: str, env: Mapping[str, str]) -> Credentials:
    """``--kubeconfig``, else ``$KUBECONFIG`` (first file), else in-cluster."""
    path = kubeconfig or (env.get("KUBECONFIG", "").split(os.pathsep)[0])
    if path:
        return load_kubeconfig(path, context)
    return load_in_cluster(env)


@dataclass(frozen=True)
class WatchEvent:
    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    object: dict[str, Any]


@dataclass
class ListResult:
    items: list[dict[str, Any]]
    resource_version: str


class Kube:
    """An asyncio Kubernetes client. Use ``async with Kube(creds, ...) as kube``."""

    def __init__(
        self,
        creds: Credentials,
        *,
        field_manager: str,
        on_request: OnRequest | None = None,
        timeout_s: float = 30.0,
        user_agent: str = "kaito-reconciler",
    ) -> None:
        self.creds = creds
        self.field_manager = field_manager
        self.on_request = on_request or (lambda verb, resource, code: None)
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = creds.token
        self._token_read = 0.0

    async def __aenter__(self) -> Kube:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.creds.ssl_context(), limit=64)
        self._session = aiohttp.ClientSession(
            base_url=self.creds.server,
            connector=connector,
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ plumbing

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.creds.token_file and time.monotonic() - self._token_read > 60:
            # Bound service-account tokens rotate; re-read the file every minute.
            with contextlib.suppress(OSError):
                self._token = Path(self.creds.token_file).read_text().strip()
                self._token_read = time.monotonic()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Kube is not open; use `async with Kube(...)`")
        return self._session

    async def _request(
        self,
        method: str,
        verb: str,
        resource: Resource,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        what: str = "",
    ) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        if data is not None and content_type is None:
            content_type = "application/json"
        code = 0
        try:
            async with self.session.request(
                method,
                path,
                params=params,
                data=data,
                headers=self._headers(content_type),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                code = resp.status
                text = await resp.text()
        finally:
            self.on_request(verb, str(resource), code)
        payload: Any = None
        if text:
            try:
                payload = json.loads(text)
            except ValueError:
                payload = {"message": text}
        if code >= 400:
            reason = payload.get("reason", "") if isinstance(payload, dict) else ""
            message = payload.get("message", text) if isinstance(payload, dict) else text
            raise api_error(code, reason, message, what=what or f"{method} {path}")
        return payload

    @staticmethod
    def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return params

    # ------------------------------------------------------------------ reads

    async def get(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._request(
                "GET", "get", resource, resource.path(namespace, name)
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> ListResult:
        """Every object (following ``continue`` tokens) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        params = self._selectors(label_selector, field_selector)
        params["limit"] = str(page_size)
        while True:
            page = await self._request(
                "GET", "list", resource, resource.path(namespace), params=params
            )
            for item in page.get("items") or []:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return ListResult(items, str(meta.get("resourceVersion", "")))
            params["continue"] = token

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_s: float,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the watch after ``timeout_s``.

        Raises ``GoneError`` when the version is too old (the caller relists)."""
        params = self._selectors(label_selector, field_selector)
        params.update(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(max(1, math.ceil(timeout_s))),
        )
        code = 0
        try:
            async with self.session.get(
                resource.path(namespace),
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=timeout_s + 60
                ),
            ) as resp:
                code = resp.status
                self.on_request("watch", str(resource), code)
                if code >= 400:
                    text = await resp.text()
                    raise api_error(code, "", text, what=f"watch {resource}")
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        etype, obj = event.get("type"), event.get("object") or {}
                        if etype == "ERROR":
                            status = int(obj.get("code") or 500)
                            raise api_error(
                                status,
                                obj.get("reason", ""),
                                obj.get("message", ""),
                                what=f"watch {resource}",
                            )
                        if etype != "BOOKMARK":
                            obj.setdefault("apiVersion", resource.api_version)
                            obj.setdefault("kind", resource.kind)
                        yield WatchEvent(str(etype), obj)
        except aiohttp.ClientError:
            if code == 0:
                self.on_request("watch", str(resource), 0)
            raise

    # ------------------------------------------------------------------ writes

    async def apply(
        self, obj: Mapping[str, Any], *, subresource: str | None = None, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (or its status) with our field manager."""
        resource = resource_of(dict(obj))
        meta = obj["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"], subresource)
        params = {"fieldManager": self.field_manager}
        if force:
            params["force"] = "true"
        result: dict[str, Any] = await self._request(
            "PATCH",
            "apply" if subresource is None else f"apply/{subresource}",
            resource,
            path,
            params=params,
            body=dict(obj),
            content_type=APPLY_CONTENT_TYPE,
            what=f"apply {resource.kind} {meta.get('namespace', '')}/{meta['name']}".replace(
                " /", " "
            ),
        )
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        resource = resource_of(dict(obj))
        meta = obj["metadata"]
        result: dict[str, Any] = await self._request(
            "POST",
            "create",
            resource,
            resource.path(meta.get("namespace")),
            params={"fieldManager": self.field_manager},
            body=dict(obj),
        )
        return result

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the object's resourceVersion: ``ConflictError`` when someone wrote first."""
        resource = resource_of(dict(obj))
        meta = obj["metadata"]
        result: dict[str, Any] = await self._request(
            "PUT",
            "update",
            resource,
            resource.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": self.field_manager},
            body=dict(obj),
        )
        return result

    async def patch(
        self,
        resource: Resource,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        content_type: str = JSON_PATCH_CONTENT_TYPE,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON patch (default) or merge patch (``MERGE_PATCH_CONTENT_TYPE``)."""
        result: dict[str, Any] = await self._request(
            "PATCH",
            "patch" if subresource is None else f"patch/{subresource}",
            resource,
            resource.path(namespace, name, subresource),
            params={"fieldManager": self.field_manager},
            body=patch,
            content_type=content_type,
        )
        return result

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False when it was already gone (or is another object of the same name)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request(
                "DELETE", "delete", resource, resource.path(namespace, name), body=body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def event(self, event: Mapping[str, Any]) -> None:
        """Create a core/v1 Event (best effort: errors are the caller's to log)."""
        ns = event["metadata"]["namespace"]
        await self._request("POST", "create", EVENTS, EVENTS.path(ns), body=dict(event))


__all__ = [
    "Credentials",
    "GoneError",
    "Kube",
    "ListResult",
    "WatchEvent",
    "load_credentials",
    "load_in_cluster",
    "load_kubeconfig",
]
