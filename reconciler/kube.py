"""The one Kubernetes client of the controller processes (reconciler, webhook, certificates).

Credentials and transport come from ``kubernetes_asyncio``, the asyncio port of the official
client (:mod:`reconciler.kubeconfig`: every kubeconfig the official client accepts, exec
credential plugins and auth-providers included, and the in-cluster service account); its aiohttp
transport sends the requests. On top of it this module keeps a small typed API of plain dicts:
get, list (paginated), watch (a stream of events), server-side apply under one field manager
(``force`` for our own fields; another manager or a dry run on request), apply to the status
subresource, create, replace (optimistic concurrency, for the Lease), patch, delete and Events.
Every request is counted through an ``on_request(verb, resource, code)`` hook.

After an HTTP 401 with renewable credentials (exec plugins, auth-providers) they are loaded again
and the request is retried once.

Only this module and :mod:`reconciler.kubeconfig` import ``kubernetes_asyncio``; ``webhook.kube``
and ``certs.kube`` are facades over a :class:`Kube` (the webhook process builds one, shared with
its certificate manager).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from reconciler.errors import ApiError, GoneError, api_error
from reconciler.kubeconfig import (
    SA_DIR,
    Auth,
    Credentials,
    load_credentials,
    load_in_cluster,
    load_kubeconfig,
)
from reconciler.resources import EVENTS, Resource, resource_of

if TYPE_CHECKING:
    from kubernetes_asyncio.client.rest import RESTClientObject
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"

OnRequest = Callable[[str, str, int], None]
"""Called after every request with (verb, resource, HTTP status or 0 for a network error)."""


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
        self._auth: Auth | None = None
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
            if self._rest is None:
                self._auth = await Auth.load(self.creds)
                self._rest = self._auth.transport()

    @property
    def server(self) -> str:
        """The apiserver's URL, as the credentials loader resolved it (once open)."""
        return self._auth.server if self._auth is not None else self.creds.server

    async def close(self) -> None:
        if self._rest is not None:
            rest, self._rest = self._rest, None
            await rest.close()
            await asyncio.sleep(0.25)  # let closing TLS transports finish (aiohttp advice)

    async def _reauthenticate(self, generation: int) -> bool:
        """After HTTP 401: load renewable credentials again; whether to retry the request."""
        if self._auth is None or not self._auth.renewable:
            return False
        async with self._lock:
            if generation == self._auth_generation:  # else another request did it already
                if await self._auth.reload() and self._rest is not None:
                    old, self._rest = self._rest, self._auth.transport()
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
            assert self._auth is not None
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            token = await self._auth.authorization()
            if token:
                headers["Authorization"] = token
            if content_type:
                headers["Content-Type"] = content_type
            generation = self._auth_generation
            resp: aiohttp.ClientResponse = await self._rest.request(
                method,
                self._auth.server + path,
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
    "SA_DIR",
    "Credentials",
    "GoneError",
    "Kube",
    "ListResult",
    "WatchEvent",
    "load_credentials",
    "load_in_cluster",
    "load_kubeconfig",
]
