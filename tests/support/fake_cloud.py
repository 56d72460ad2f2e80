"""A test-only cloud standing in for Karpenter: NodeClaims become KWOK fake GPU nodes (CPU-only
nodes for a CPU instance type).

``FakeCloud(cp)`` runs an asyncio loop in a thread. It watches ``karpenter.sh/v1`` NodeClaims
(list then watch: no polling, so it adds no idle API load) and, for each new claim:

1. adds Karpenter's ``karpenter.sh/termination`` finalizer;
2. reads the instance type from the ``node.kubernetes.io/instance-type In [...]`` requirement
   and its GPU count and memory from the SKU catalog (``api.skus``);
3. after ``delay_s`` (see ``slow()``), creates a KWOK Node named after the claim with the
   claim's labels, its single-valued ``In`` requirements as labels, its taints, ``providerID
   kwok://<name>`` and an owner reference to the claim;
4. once KWOK reports the Node Ready, sets the claim's ``status.nodeName``, ``providerID``,
   capacity/allocatable and the Launched, Registered, Initialized and Ready conditions.

An instance type marked with ``fail(instance_type, reason)`` (or one the catalog lacks) gets
``Launched=False`` with that reason instead. When a claim is deleted, its node is deleted and
then the finalizer removed, as Karpenter does.

It talks to the apiserver with the project's asyncio client (``reconciler.kube``) under its own
field manager. Use as a context manager; ``launched`` lists the claims it turned into nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.skus import load_skus
from reconciler.errors import ApiError, NotFoundError
from reconciler.kube import Kube, load_kubeconfig
from reconciler.resources import NODECLAIMS, NODES
from tests.cluster.nodes import fake_cpu_node, fake_gpu_node

if TYPE_CHECKING:
    from tests.cluster.harness import ControlPlane

log = logging.getLogger(__name__)

FINALIZER = "karpenter.sh/termination"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
CONDITIONS = ("Launched", "Registered", "Initialized", "Ready")
MERGE = "application/merge-patch+json"
WORKERS = 8
"""Claims handled at once (one claim is only ever handled by one worker at a time)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def instance_type_of(claim: dict[str, Any]) -> str | None:
    for req in (claim.get("spec") or {}).get("requirements") or []:
        if req.get("key") == INSTANCE_TYPE and req.get("operator") == "In" and req.get("values"):
            return str(req["values"][0])
    return None


def node_for_claim(claim: dict[str, Any]) -> dict[str, Any] | None:
    """The KWOK Node manifest for a claim (pure); None when its instance type is unknown."""
    sku = load_skus().get(instance_type_of(claim) or "")
    if sku is None:
        return None
    meta = claim["metadata"]
    labels = dict(meta.get("labels") or {})
    for req in claim["spec"].get("requirements") or []:
        if req.get("operator") == "In" and len(req.get("values") or []) == 1:
            labels.setdefault(req["key"], req["values"][0])
    labels["karpenter.sh/registered"] = "true"
    labels["karpenter.sh/initialized"] = "true"
    taints = [
        {k: v for k, v in t.items() if k in ("key", "value", "effect")}
        for t in claim["spec"].get("taints") or []
    ]
    if sku.is_cpu:
        node = fake_cpu_node(
            meta["name"],
            sku.name,
            cpu=str(sku.vcpus),
            memory=f"{sku.memory_mib}Mi",
            labels=labels,
            taints=taints,
        )
    else:
        node = fake_gpu_node(
            meta["name"],
            sku.name,
            gpus=sku.gpu_count,
            gpu_product=sku.gpu_model.replace(" ", "-"),
            gpu_memory_mib=sku.gpu_memory_mib,
            labels=labels,
            taints=taints,
        )
    node["spec"]["providerID"] = f"kwok://{meta['name']}"
    node["metadata"]["ownerReferences"] = [
        {
            "apiVersion": NODECLAIMS.api_version,
            "kind": "NodeClaim",
            "name": meta["name"],
            "uid": meta["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    return node


class FakeCloud:
    def __init__(self, cp: ControlPlane, *, delay_s: float = 0.0) -> None:
        self.cp = cp
        self.delay_s = delay_s
        self.failures: dict[str, str] = {}
        self.launched: list[str] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._busy: set[str] = set()

    # ------------------------------------------------------------------ knobs

    def fail(self, instance_type: str, reason: str = "InsufficientCapacity") -> None:
        """Claims for ``instance_type`` fail to launch with ``reason``."""
        self.failures[instance_type.lower()] = reason

    def heal(self, instance_type: str) -> None:
        self.failures.pop(instance_type.lower(), None)

    def slow(self, delay_s: float) -> None:
        """Nodes appear ``delay_s`` seconds after their claim was created."""
        self.delay_s = delay_s

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-cloud")
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("fake cloud did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        creds = load_kubeconfig(self.cp.kubeconfig)
        async with Kube(creds, field_manager="fake-cloud") as kube:
            self.kube = kube
            self._queue: asyncio.Queue[str] = asyncio.Queue()
            tasks = [
                asyncio.ensure_future(self._watch()),
                *(asyncio.ensure_future(self._work()) for _ in range(WORKERS)),
            ]
            self._started.set()
            await self._stopping.wait()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            for h in self._pending.values():
                h.cancel()

    # ------------------------------------------------------------------ loops

    def _schedule(self, name: str, delay: float = 0.0) -> None:
        if delay <= 0:
            self._queue.put_nowait(name)
            return
        old = self._pending.pop(name, None)
        if old is not None:
            old.cancel()
        assert self._loop is not None
        self._pending[name] = self._loop.call_later(delay, self._queue.put_nowait, name)

    async def _watch(self) -> None:
        while True:
            try:
                listed = await self.kube.list(NODECLAIMS)
                for item in listed.items:
                    self._schedule(item["metadata"]["name"])
                rv = listed.resource_version
                while True:
                    watch = self.kube.watch(NODECLAIMS, resource_version=rv, timeout_s=30)
                    async with contextlib.aclosing(watch) as stream:
                        async for event in stream:
                            rv = event.object.get("metadata", {}).get("resourceVersion", rv)
                            if event.type != "BOOKMARK":
                                self._schedule(event.object["metadata"]["name"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("fake cloud watch: %r", exc)
                await asyncio.sleep(0.5)

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            if name in self._busy:  # another worker has it: look again shortly
                self._schedule(name, 0.1)
                continue
            self._busy.add(name)
            try:
                await self._handle(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("fake cloud %s: %r", name, exc)
                self._schedule(name, 0.5)
            finally:
                self._busy.discard(name)

    # ------------------------------------------------------------------ one claim

    async def _handle(self, name: str) -> None:
        claim = await self.kube.get(NODECLAIMS, name)
        if claim is None:
            return
        meta = claim["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            await self._terminate(claim)
            return
        if FINALIZER not in finalizers:
            await self.kube.patch(
                NODECLAIMS,
                name,
                None,
                {"metadata": {"finalizers": [*finalizers, FINALIZER]}},
                content_type=MERGE,
            )
        status = claim.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conds.get("Ready") == "True":
            return
        itype = (instance_type_of(claim) or "").lower()
        if itype in self.failures or node_for_claim(claim) is None:
            reason = self.failures.get(itype, "InstanceTypeNotFound")
            if conds.get("Launched") != "False":
                await self._set_status(
                    name,
                    {
                        "conditions": [
                            {
                                "type": "Launched",
                                "status": "False",
                                "reason": reason,
                                "message": f"cannot launch instance type {itype!r}: {reason}",
                                "lastTransitionTime": _now(),
                            }
                        ]
                    },
                )
            return
        created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
        wait = self.delay_s - (datetime.now(UTC) - created).total_seconds()
        if wait > 0:
            self._schedule(name, wait)
            return
        node = await self.kube.get(NODES, name)
        if node is None:
            manifest = node_for_claim(claim)
            assert manifest is not None
            await self.kube.create(manifest)
            self.launched.append(name)
            self._schedule(name, 0.3)
            return
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )
        if not ready:
            self._schedule(name, 0.3)
            return
        node_status = node.get("status") or {}
        await self._set_status(
            name,
            {
                "nodeName": name,
                "providerID": f"kwok://{name}",
                "capacity": dict(node_status.get("capacity") or {}),
                "allocatable": dict(node_status.get("allocatable") or {}),
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": t,
                        "message": "",
                        "lastTransitionTime": _now(),
                    }
                    for t in CONDITIONS
                ],
            },
        )

    async def _set_status(self, name: str, status: dict[str, Any]) -> None:
        await self.kube.patch(
            NODECLAIMS, name, None, {"status": status}, content_type=MERGE, subresource="status"
        )

    async def _terminate(self, claim: dict[str, Any]) -> None:
        name = claim["metadata"]["name"]
        if await self.kube.get(NODES, name) is not None:
            with contextlib.suppress(ApiError):
                await self.kube.delete(NODES, name)
            self._schedule(name, 0.3)
            return
        finalizers = [f for f in claim["metadata"].get("finalizers") or [] if f != FINALIZER]
        with contextlib.suppress(NotFoundError):
            await self.kube.patch(
                NODECLAIMS,
                name,
                None,
                {"metadata": {"finalizers": finalizers or None}},
                content_type=MERGE,
            )
