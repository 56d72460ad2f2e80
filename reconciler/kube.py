"""The one Kubernetes client of the controller processes (reconciler, webhook, certificates).

Credentials and transport come from ``kubernetes_asyncio``, the asyncio port of the official
client: its kubeconfig loader handles every kubeconfig the official client does (client
certificates, bearer tokens and token files, ``exec`` credential plugins such as EKS's
``aws eks get-token``, GKE's ``gke-gcloud-auth-plugin`` or AKS's ``kubelogin``, and the ``gcp`` and
``oidc`` auth-providers), its in-cluster loader reads the pod's service account (re-reading the
rotating token), and its aiohttp transport sends the requests. On top of it this module keeps a
small typed API of plain dicts: get, list (paginated), watch (a stream of events), server-side
apply under one field manager (``force`` for our own fields), apply to the status subresource,
create, replace (optimistic concurrency, for the Lease), patch, delete and Events. Every request
is counted through an ``on_request(verb, resource, code)`` hook.

Tokens from an exec plugin are reused until the expiry the plugin states, then the plugin runs
again; an HTTP 401 runs it again at once and retries the request once.

Only this module imports ``kubernetes_asyncio``; ``webhook.kube`` and ``certs.kube`` are facades
over a :class:`Kube` (the webhook process builds one, shared with its certificate manager).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

if TYPE_CHECKING:
    from kubernetes_asyncio.client.rest import RESTClientObject
    from kubernetes_asyncio.config.kube_config import KubeConfigLoader

from reconciler.errors import ApiError, GoneError, KubeConfigError, api_error
from reconciler.resources import EVENTS, Resource, resource_of

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"

OnRequest = Callable[[str, str, int], None]
"""Called after every request with (verb, resource, HTTP status or 0 for a network error)."""


def _library() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """kubernetes_asyncio's ``configuration``, ``rest`` (the transport), ``kube_config`` and
    ``incluster_config`` modules, imported on first use without running the package
    ``__init__`` modules: those import every generated API and model class (about 700 modules:
    70 MiB more RSS and seconds of CPU at start) that this client never uses. Where the whole
    package is imported already, it is used as it is."""
    if "kubernetes_asyncio.client" not in sys.modules:
        for name in (
            "kubernetes_asyncio",
            "kubernetes_asyncio.client",
            "kubernetes_asyncio.config",
        ):
            spec = importlib.util.find_spec(name)
            if spec is None:
                raise ModuleNotFoundError(f"{name} is not installed", name=name)
            sys.modules[name] = importlib.util.module_from_spec(spec)
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
        client = sys.modules["kubernetes_asyncio.client"]
        client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
        client.ApiClient = None  # type: ignore[attr-defined]  # named by kube_config, unused here
    return (
        importlib.import_module("kubernetes_asyncio.client.configuration"),
        importlib.import_module("kubernetes_asyncio.client.rest"),
        importlib.import_module("kubernetes_asyncio.config.kube_config"),
        importlib.import_module("kubernetes_asyncio.config.incluster_config"),
    )


@dataclass(frozen=True)
class Credentials:
    """Where to reach one apiserver and where its credentials come from.

    Built by :func:`load_kubeconfig` (which checks the file's structure at once) or
    :func:`load_in_cluster`; the credentials themselves (running an exec plugin, reading
    certificates and tokens) are loaded by ``kubernetes_asyncio`` when a :class:`Kube` opens."""

    server: str
    namespace: str | None = None
    """The namespace the credentials belong to (the context's, in-cluster: the pod's)."""
    kubeconfig: Path | None = None
    """The kubeconfig file; None for the in-cluster service account."""
    context: str = ""
    user: str = ""
    """The kubeconfig user of the context (for messages)."""
    auth: str = ""
    """How the user authenticates: exec, auth-provider, token, client certificate, none."""
    exec_command: str = ""
    """The exec credential plugin's command (for messages)."""
    sa_dir: Path = SA_DIR
    service: tuple[str, str] = ("", "")
    """In-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT."""

    def describe(self) -> str:
        if self.kubeconfig is None:
            return f"the in-cluster service account ({self.sa_dir})"
        return f"kubeconfig {self.kubeconfig}, context {self.context!r}, user {self.user!r}"


def _auth_kind(user: Mapping[str, Any]) -> str:
    if "exec" in user:
        return "exec"
    if "auth-provider" in user:
        return "auth-provider"
    if user.get("token") or user.get("tokenFile"):
        return "token"
    if user.get("client-certificate") or user.get("client-certificate-data"):
        return "client certificate"
    return "none"


def load_kubeconfig(path: str | Path, context: str = "") -> Credentials:
    """The server, namespace and user of a kubeconfig's named (or current) context.

    Raises ``KubeConfigError`` naming the file and the fix when the file cannot be read or the
    context, cluster or server is missing."""
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
    user_name = str(ctx.get("user") or "")
    user = named("users", user_name) if user_name else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"kubeconfig {path}: cluster of context {ctx_name!r} has no server")
    return Credentials(
        server=server.rstrip("/"),
        namespace=ctx.get("namespace") or None,
        kubeconfig=path,
        context=str(ctx_name),
        user=user_name,
        auth=_auth_kind(user),
        exec_command=str((user.get("exec") or {}).get("command", "")),
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
    ns_file = sa_dir / "namespace"
    return Credentials(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        namespace=ns_file.read_text().strip() if ns_file.exists() else None,
        auth="token",
        sa_dir=sa_dir,
        service=(host, port),
    )


def load_credentials(kubeconfig: str, context: str, env: Mapping[str, str]) -> Credentials:
    """``--kubeconfig``, else ``$KUBECONFIG`` (first file), else in-cluster."""
    path = kubeconfig or (env.get("KUBECONFIG", "").split(os.pathsep)[0])
    if path:
        return load_kubeconfig(path, context)
    return load_in_cluster(env)


def _load_failure(creds: Credentials, exc: BaseException) -> KubeConfigError:
    """The error for credentials that cannot be loaded, naming where they come from and the fix."""
    where = creds.describe()
    if creds.auth == "exec":
        fix = (
            "run the plugin's command by hand to see why (is it installed and on PATH, are you "
            "logged in to the cloud?), or use a kubeconfig with a token or a client certificate"
        )
        return KubeConfigError(
            f"{where}: the exec credential plugin {creds.exec_command!r} failed: {exc}; fix: {fix}"
        )
    if creds.kubeconfig is None:
        fix = "mount the service account token and CA, or pass --kubeconfig"
    else:
        fix = f"check the {creds.auth} credentials of that user, or pass another kubeconfig"
    return KubeConfigError(f"{where}: cannot load the credentials: {exc}; fix: {fix}")


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
    """An asyncio Kubernetes client. Use ``async with Kube(creds, ...) as kube``; a client not
    opened explicitly opens on its first request."""

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
        self._config: Any = None
        self._loader: KubeConfigLoader | None = None
        self._rest: RESTClientObject | None = None
        self._lock = asyncio.Lock()
        self._auth_generation = 0

    async def __aenter__(self) -> Kube:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Load the credentials (runs an exec plugin) and start the connection pool."""
        async with self._lock:
            if self._rest is not None:
                return
            configuration, rest, kube_config, incluster_config = _library()
            config = configuration.Configuration()
            config.connection_pool_maxsize = 64
            creds = self.creds
            try:
                if creds.kubeconfig is not None:
                    self._loader = await kube_config.load_kube_config(
                        config_file=str(creds.kubeconfig),
                        context=creds.context or None,
                        client_configuration=config,
                        persist_config=False,
                    )
                else:
                    host, port = creds.service
                    incluster_config.InClusterConfigLoader(
                        token_filename=str(creds.sa_dir / "token"),
                        cert_filename=str(creds.sa_dir / "ca.crt"),
                        environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
                    ).load_and_set(config)
            except Exception as exc:  # the loaders raise ConfigException, OSError, ValueError...
                raise _load_failure(creds, exc) from exc
            if self._loader is not None and creds.auth == "exec":
                config.refresh_api_key_hook = self._refresh_exec_token
            self._config = config
            self._rest = rest.RESTClientObject(config)

    @property
    def server(self) -> str:
        """The apiserver's URL, as the credentials loader resolved it (once open)."""
        return str(self._config.host) if self._config is not None else self.creds.server

    async def close(self) -> None:
        if self._rest is not None:
            rest, self._rest = self._rest, None
            await rest.close()
            await asyncio.sleep(0.25)  # let closing TLS transports finish (aiohttp advice)

    # ------------------------------------------------------------------ credentials

    async def _refresh_exec_token(self, config: Any) -> None:
        """Before each request: run the exec plugin again once its token has expired."""
        loader = self._loader
        if loader is None or not hasattr(loader, "exec_plugin_expiry"):
            return  # no expiry stated: the token is kept until the apiserver refuses it
        await loader.load_from_exec_plugin()  # returns at once while the token is valid
        if hasattr(loader, "token"):
            config.api_key["BearerToken"] = loader.token

    async def _reauthenticate(self, generation: int) -> bool:
        """After HTTP 401: load the credentials again (exec plugins run again); whether the
        request is worth retrying."""
        loader = self._loader
        if loader is None or self.creds.auth not in ("exec", "auth-provider"):
            return False
        async with self._lock:
            if generation != self._auth_generation:
                return True  # another request already did it
            if hasattr(loader, "exec_plugin_expiry"):
                del loader.exec_plugin_expiry
            old_cert = self._config.cert_file
            try:
                await loader.load_and_set(self._config)
            except Exception as exc:
                raise _load_failure(self.creds, exc) from exc
            if self._config.cert_file != old_cert and self._rest is not None:
                old, self._rest = self._rest, _library()[1].RESTClientObject(self._config)
                await old.close()
            self._auth_generation += 1
        return True

    # ------------------------------------------------------------------ plumbing

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """One request through the transport, with the current credentials; the response is
        not read yet (the caller releases it)."""
        if self._rest is None:
            await self.open()
        for attempt in range(2):
            assert self._rest is not None
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            token = await self._config.get_api_key_with_prefix("BearerToken")
            if token:
                headers["Authorization"] = token
            if content_type:
                headers["Content-Type"] = content_type
            generation = self._auth_generation
            resp: aiohttp.ClientResponse = await self._rest.request(
                method,
                self._config.host + path,
                query_params=dict(params) if params else None,
                headers=headers,
                body=body,
                _preload_content=False,
                _request_timeout=client_timeout,
            )
            if resp.status != 401 or attempt or not await self._reauthenticate(generation):
                return resp
            resp.release()
        raise AssertionError("unreachable")

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
        timeout_s: float | None = None,
    ) -> Any:
        if body is not None and content_type is None:
            content_type = "application/json"
        code = 0
        try:
            resp = await self._send(
                method,
                path,
                params=params,
                body=body,
                content_type=content_type,
                client_timeout=aiohttp.ClientTimeout(total=timeout_s or self.timeout_s),
            )
            try:
                code = resp.status
                text = await resp.text()
            finally:
                resp.release()
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
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._request(
                "GET", "get", resource, resource.path(namespace, name), timeout_s=timeout_s
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
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> ListResult:
        """Every object (following ``continue`` tokens) and the list's resourceVersion.

        ``transform`` is applied to each object as its page arrives (a cache keeps slim
        projections without ever holding every full object at once)."""
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
                items.append(transform(item) if transform else item)
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
    ) -> AsyncGenerator[WatchEvent, None]:
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
            resp = await self._send(
                "GET",
                resource.path(namespace),
                params=params,
                body=None,
                content_type=None,
                client_timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=timeout_s + 60
                ),
            )
        except (aiohttp.ClientError, TimeoutError):
            self.on_request("watch", str(resource), 0)
            raise
        try:
            code = resp.status
            self.on_request("watch", str(resource), code)
            if code >= 400:
                text = await resp.text()
                raise api_error(code, "", text, what=f"watch {resource}")
            async for line in resp.content:
                if line.strip():
                    yield self._event(resource, json.loads(line))
        finally:
            resp.close()  # a watch's connection is not reused

    @staticmethod
    def _event(resource: Resource, event: dict[str, Any]) -> WatchEvent:
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            status = int(obj.get("code") or 500)
            raise api_error(
                status, obj.get("reason", ""), obj.get("message", ""), what=f"watch {resource}"
            )
        if etype != "BOOKMARK":
            obj.setdefault("apiVersion", resource.api_version)
            obj.setdefault("kind", resource.kind)
        return WatchEvent(str(etype), obj)

    # ------------------------------------------------------------------ writes

    async def apply(
        self,
        obj: Mapping[str, Any],
        *,
        subresource: str | None = None,
        force: bool = True,
        field_manager: str | None = None,
        dry_run: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (or its status) with our field manager (or another one);
        ``dry_run``: the apiserver checks and answers without storing."""
        resource = resource_of(dict(obj))
        meta = obj["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"], subresource)
        params = {"fieldManager": field_manager or self.field_manager}
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
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
            timeout_s=timeout_s,
        )
        return result

    async def _write(
        self, method: str, verb: str, obj: Mapping[str, Any], field_manager: str | None = None
    ) -> dict[str, Any]:
        resource = resource_of(dict(obj))
        meta = obj["metadata"]
        result: dict[str, Any] = await self._request(
            method,
            verb,
            resource,
            resource.path(meta.get("namespace"), meta["name"] if method == "PUT" else None),
            params={"fieldManager": field_manager or self.field_manager},
            body=dict(obj),
        )
        return result

    async def create(
        self, obj: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        return await self._write("POST", "create", obj, field_manager)

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the object's resourceVersion: ``ConflictError`` when someone wrote first."""
        return await self._write("PUT", "update", obj)

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
