"""The loop: caches, the work queue, workers, the resync, and leadership.

* Informers keep slim caches of Workspaces and what we own (Deployments, StatefulSets,
  Services, Pods: by the ``kaito.sh/workspace`` label; NodeClaims; Nodes; the admin ConfigMap;
  every ConfigMap, projected to its ``inference_config.yaml`` key, for ``inference.config``).
  Every replica keeps them warm, so a new leader starts at once.
* A change to any of them wakes the affected Workspace (``keys_for``); every full relist of
  Workspaces enqueues all of them (the safety net).
* Workers take keys from the queue; a failed reconcile is retried with per-key exponential
  backoff; a Workspace that waits for something is requeued after ``pending_requeue_s``.
* Only the leader reconciles; a replica that stops leading skips its keys and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.errors import ApiError, NotLeaderError
from reconciler.inference_config import INFERENCE_CONFIG_KIND, project, referencing
from reconciler.informer import Informer, Key
from reconciler.labels import LABEL_INSTANCE_TYPE, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.observe import Obj
from reconciler.queue import Backoff, QueueShutDown, WorkQueue
from reconciler.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NODECLAIMS,
    NODES,
    PODS,
    SERVICES,
    STATEFULSETS,
    WORKSPACES,
)

if TYPE_CHECKING:
    from reconciler.kube import Kube
    from reconciler.metrics import Metrics
    from reconciler.reconcile import Reconciler
    from reconciler.server import Health

log = logging.getLogger(__name__)


ADMISSION_RETRY_S = 5.0
"""Longest wait before retrying a write an admission webhook could not judge: it is back as
soon as its Pod is, and the full backoff (minutes) would outlast that."""


def admission_unavailable(exc: BaseException) -> bool:
    """The apiserver could not call an admission webhook (it is down or restarting)."""
    return isinstance(exc, ApiError) and "failed calling webhook" in exc.message


def _spec_view(ws: Obj) -> Any:
    """What of a Workspace can change what we do (not its status, which we write)."""
    meta = ws.get("metadata") or {}
    return (
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        tuple(meta.get("finalizers") or ()),
        tuple(sorted((meta.get("annotations") or {}).items())),
        meta.get("uid"),
    )


def keys_for(kind: str, old: Obj | None, new: Obj | None, workspaces: list[Obj]) -> set[Key]:
    """The Workspaces a change of one object concerns (pure)."""
    keys: set[Key] = set()
    for obj in (old, new):
        if obj is None:
            continue
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if kind == "Workspace":
            keys.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        elif kind == "NodeClaim":
            if LABEL_WORKSPACE in labels and LABEL_WORKSPACE_NAMESPACE in labels:
                keys.add((str(labels[LABEL_WORKSPACE_NAMESPACE]), str(labels[LABEL_WORKSPACE])))
        elif kind == "Node":
            keys |= _node_keys(meta, labels, workspaces)
        elif kind == INFERENCE_CONFIG_KIND:
            keys |= referencing(obj, workspaces)
        elif kind == "ConfigMap":
            for ws in workspaces:
                wmeta = ws.get("metadata") or {}
                keys.add((str(wmeta.get("namespace", "")), str(wmeta.get("name", ""))))
        elif LABEL_WORKSPACE in labels:
            keys.add((str(meta.get("namespace", "")), str(labels[LABEL_WORKSPACE])))
    return keys


def _node_keys(meta: dict[str, Any], labels: dict[str, Any], workspaces: list[Obj]) -> set[Key]:
    """A node concerns the Workspace it was made for, the Workspaces it serves or that prefer
    it, and Workspaces still waiting for nodes that could take it (same instance type, not
    made for another Workspace)."""
    name = meta.get("name")
    owner = None
    if LABEL_WORKSPACE in labels and LABEL_WORKSPACE_NAMESPACE in labels:
        owner = (str(labels[LABEL_WORKSPACE_NAMESPACE]), str(labels[LABEL_WORKSPACE]))
    keys = {owner} if owner else set()
    itype = str(labels.get(LABEL_INSTANCE_TYPE, "")).lower()
    for ws in workspaces:
        wmeta = ws.get("metadata") or {}
        key = (str(wmeta.get("namespace", "")), str(wmeta.get("name", "")))
        status = ws.get("status") or {}
        resource = ws.get("resource") or {}
        if name in (status.get("workerNodes") or []) or name in (
            resource.get("preferredNodes") or []
        ):
            keys.add(key)
            continue
        if owner is not None:
            continue
        ready = any(
            c.get("type") == "ResourceReady" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if not ready and str(resource.get("instanceType", "")).lower() == itype:
            keys.add(key)
    return keys


class Controller:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str | None,
        relist_interval_s: float,
        workers: int,
        backoff_base_s: float,
        backoff_max_s: float,
        metrics: Metrics,
        health: Health,
        config_ref: tuple[str, str] | None = None,
        reconciler_factory: Callable[[Controller], Reconciler],
    ) -> None:
        self.kube = kube
        self.namespace = namespace or None
        self.workers = workers
        self.metrics = metrics
        self.health = health
        self.queue: WorkQueue[Key] = WorkQueue()
        self.backoff: Backoff[Key] = Backoff(backoff_base_s, backoff_max_s)
        self._leading: Callable[[], bool] = lambda: True

        def informer(resource: Any, kind: str | None = None, **kw: Any) -> Informer:
            what = kind or resource.kind
            return Informer(
                kube,
                resource,
                relist_interval_s=relist_interval_s,
                on_change=lambda old, new: self._on_change(what, old, new),
                on_list=lambda r: metrics.watch_restarts.labels(r).inc(),
                **kw,
            )

        ns = self.namespace
        claim_selector = LABEL_WORKSPACE + (f",{LABEL_WORKSPACE_NAMESPACE}={ns}" if ns else "")
        self.workspaces = informer(WORKSPACES, namespace=ns, on_relist=self._resync)
        self.deployments = informer(DEPLOYMENTS, namespace=ns, label_selector=LABEL_WORKSPACE)
        self.statefulsets = informer(STATEFULSETS, namespace=ns, label_selector=LABEL_WORKSPACE)
        self.services = informer(SERVICES, namespace=ns, label_selector=LABEL_WORKSPACE)
        self.pods = informer(PODS, namespace=ns, label_selector=LABEL_WORKSPACE)
        self.nodeclaims = informer(NODECLAIMS, label_selector=claim_selector, optional=True)
        self.nodes = informer(NODES)
        # inference.config: any ConfigMap may be named, unlabelled (as in KAITO), so the watch
        # covers all of them; the cache keeps only their inference_config.yaml key.
        self.inference_configs = informer(
            CONFIGMAPS, kind=INFERENCE_CONFIG_KIND, namespace=ns, project=project
        )
        self.config: Informer | None = None
        if config_ref is not None:
            self.config = informer(
                CONFIGMAPS,
                namespace=config_ref[0],
                field_selector=f"metadata.name={config_ref[1]}",
                optional=True,
            )
        self.informers = [
            i
            for i in (
                self.workspaces,
                self.deployments,
                self.statefulsets,
                self.services,
                self.pods,
                self.nodeclaims,
                self.nodes,
                self.inference_configs,
                self.config,
            )
            if i is not None
        ]
        self.reconciler = reconciler_factory(self)

    # ------------------------------------------------------------------ events

    def _on_change(self, kind: str, old: Obj | None, new: Obj | None) -> None:
        if (
            kind == "Workspace"
            and old is not None
            and new is not None
            and _spec_view(old) == _spec_view(new)
        ):
            return  # our own status write, or nothing we act on
        for key in keys_for(kind, old, new, self.workspaces.values()):
            if (
                kind != "Workspace"
                and self.backoff.count(key)
                and self.queue.scheduled_in(key) is not None
            ):
                continue  # failing: wait out the backoff; a spec change still retries at once
            self.queue.add(key)

    def _resync(self) -> None:
        """After every full list of Workspaces: look at all of them, and at the owners of
        NodeClaims (whose Workspace may be gone)."""
        for ws in self.workspaces.values():
            meta = ws["metadata"]
            self.queue.add((meta.get("namespace", ""), meta["name"]))
        for claim in self.nodeclaims.values():
            for key in keys_for("NodeClaim", None, claim, []):
                self.queue.add(key)

    def set_leading(self, leading: Callable[[], bool]) -> None:
        self._leading = leading

    def leading(self) -> bool:
        return self._leading()

    def on_started_leading(self) -> None:
        self.metrics.leader.set(1)
        self.health.leading = True
        self._resync()

    def on_stopped_leading(self) -> None:
        self.metrics.leader.set(0)
        self.health.leading = False

    # ------------------------------------------------------------------ workers

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            started = time.perf_counter()
            try:
                if not self.leading():
                    self.metrics.reconciles.labels("skipped").inc()
                    continue
                try:
                    result = await self.reconciler.reconcile(key)
                except NotLeaderError:
                    self.metrics.reconciles.labels("skipped").inc()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self.backoff.next_delay(key)
                    if admission_unavailable(exc):
                        delay = min(delay, ADMISSION_RETRY_S)
                    log.warning(
                        "reconcile %s/%s failed (attempt %d), retrying in %.1fs: %s",
                        key[0],
                        key[1],
                        self.backoff.count(key),
                        delay,
                        exc,
                    )
                    self.queue.add_after(key, delay)
                    self.metrics.reconciles.labels("error").inc()
                else:
                    self.backoff.forget(key)
                    if result.requeue_after is not None:
                        self.queue.add_after(key, result.requeue_after)
                        self.metrics.reconciles.labels("requeue").inc()
                    else:
                        self.metrics.reconciles.labels("ok").inc()
                finally:
                    self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            finally:
                self.queue.done(key)

    async def _heartbeat(self) -> None:
        while True:
            self.health.last_tick = time.monotonic()
            self.metrics.queue_depth.set(len(self.queue))
            self.metrics.queue_waiting.set(self.queue.waiting)
            self.metrics.workspaces.set(len(self.workspaces.store))
            await asyncio.sleep(1.0)

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        self.health.synced = True

    async def run(self, elector_run: Callable[[], Any] | None = None) -> None:
        """Run until cancelled."""
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(i.run()) for i in self.informers]
        tasks.append(asyncio.ensure_future(self._heartbeat()))
        elector: asyncio.Future[Any] | None = None
        try:
            await self.wait_synced()
            log.info("caches synced: %d Workspaces", len(self.workspaces.store))
            if elector_run is not None:
                elector = asyncio.ensure_future(elector_run())
                tasks.append(elector)
            else:
                self.on_started_leading()
            tasks += [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
            await asyncio.gather(*tasks)
        finally:
            # Stop the workers first, then the elector once (a second cancel would interrupt
            # its release of the Lease), and wait for it: the standby leads at once.
            self.queue.shutdown()
            others = [t for t in tasks if t is not elector]
            for t in others:
                t.cancel()
            for t in others:
                with contextlib.suppress(BaseException):
                    await t
            if elector is not None:
                elector.cancel()
                with contextlib.suppress(BaseException):
                    await elector
