"""A cache of one resource kept by list-then-watch, relisted every interval.

Each interval costs one LIST and one WATCH per informer (the watch's ``timeoutSeconds`` is the
time left until the next relist), whatever the number of objects: the idle load on the
apiserver is constant. The store keeps slim projections (``reconciler.observe``); the
``on_change(old, new)`` callback fires only when a projection changed (``None`` for added or
deleted), and ``on_relist`` after every full list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.errors import ApiError, GoneError, NotFoundError
from reconciler.observe import Obj, comparable, slim
from reconciler.resources import Resource

if TYPE_CHECKING:
    from reconciler.kube import Kube

log = logging.getLogger(__name__)

Key = tuple[str, str]
OnChange = Callable[[Obj | None, Obj | None], None]


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _revision(obj: Obj) -> int | None:
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(rv) if rv.isdigit() else None


def older(a: Obj, b: Obj) -> bool:
    """Whether ``a`` is an older version of the object than ``b``.

    kube-apiserver's resource versions are etcd revisions, decimal and increasing; Kubernetes
    1.35 made comparing them part of the API (client-go's ``CompareResourceVersion``, KEP-5504).
    Anything else (a missing or non-decimal version) counts as not older.
    """
    ra, rb = _revision(a), _revision(b)
    return ra is not None and rb is not None and ra < rb


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        relist_interval_s: float = 30.0,
        on_change: OnChange | None = None,
        on_relist: Callable[[], None] | None = None,
        on_list: Callable[[str], None] | None = None,
        optional: bool = False,
        clock: Callable[[], float] = time.monotonic,
        project: Callable[[Obj], Obj] = slim,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace or None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.relist_interval_s = relist_interval_s
        self.on_change = on_change or (lambda old, new: None)
        self.on_relist = on_relist or (lambda: None)
        self.on_list = on_list or (lambda resource: None)
        self.optional = optional
        """A missing resource type (e.g. no NodeClaim CRD) counts as empty, retried later."""
        self.clock = clock
        self.project = project
        """What the store keeps of an object (default: ``reconciler.observe.slim``)."""
        self.store: dict[Key, Obj] = {}
        self.synced = asyncio.Event()

    # ------------------------------------------------------------------ store

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.store.get((namespace if self.resource.namespaced else "", name))

    def values(self) -> list[Obj]:
        return list(self.store.values())

    def put(self, obj: dict[str, Any]) -> None:
        """Write-through after one of our own writes, so the next reconcile sees it.

        The watch may already have delivered a newer version (the Deployment controller's status
        update can overtake our write's response): that one is kept, or the store would hold the
        older object until the next relist.
        """
        new = self.project(obj)
        old = self.store.get(key_of(new))
        if old is not None and older(new, old):
            return
        self._upsert(new)

    def forget(self, namespace: str, name: str) -> None:
        old = self.store.pop((namespace if self.resource.namespaced else "", name), None)
        if old is not None:
            self.on_change(old, None)

    def _upsert(self, new: Obj) -> None:
        key = key_of(new)
        old = self.store.get(key)
        self.store[key] = new
        if old is None or comparable(old) != comparable(new):
            self.on_change(old, new)

    def _replace(self, items: list[Obj]) -> None:
        """Replace the store with slim objects from a full list."""
        fresh = {key_of(o): o for o in items}
        for key in list(self.store):
            if key not in fresh:
                self.on_change(self.store.pop(key), None)
        for obj in fresh.values():
            self._upsert(obj)

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._list_and_watch()
                failures = 0
            except asyncio.CancelledError:
                raise
            except GoneError:
                log.info("%s: watch expired, relisting", self.resource)
            except (ApiError, OSError, TimeoutError, ValueError) as exc:
                failures += 1
                log.warning("%s: list/watch failed: %s", self.resource, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
            except Exception as exc:  # aiohttp's ClientPayloadError and the like
                failures += 1
                log.warning("%s: list/watch failed: %r", self.resource, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _list_and_watch(self) -> None:
        try:
            result = await self.kube.list(
                self.resource,
                self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                transform=self.project,
            )
        except NotFoundError:
            if not self.optional:
                raise
            log.warning("%s: not served by this cluster; treating it as empty", self.resource)
            self._replace([])
            self.synced.set()
            await asyncio.sleep(self.relist_interval_s)
            return
        self.on_list(str(self.resource))
        self._replace(result.items)
        self.synced.set()
        self.on_relist()
        rv = result.resource_version
        deadline = self.clock() + self.relist_interval_s
        while (left := deadline - self.clock()) >= 0.5:
            # The server ends the watch after `left` seconds; then it is time to relist.
            watch = self.kube.watch(
                self.resource,
                self.namespace,
                resource_version=rv,
                timeout_s=left,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
            )
            async with contextlib.aclosing(watch) as events:
                async for event in events:
                    rv = str((event.object.get("metadata") or {}).get("resourceVersion") or rv)
                    if event.type == "BOOKMARK":
                        continue
                    if event.type == "DELETED":
                        old = self.store.pop(key_of(event.object), None)
                        if old is not None:
                            self.on_change(old, None)
                    else:
                        self._upsert(self.project(event.object))
