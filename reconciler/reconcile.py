"""One reconcile of one Workspace: read the caches, call the pure functions, write the difference.

The steps, each idempotent so that a crash between any two of them is harmless:

1. A deleted Workspace (or a NodeClaim whose Workspace is gone): delete its NodeClaims, wait for
   them to go (a requeue, not a sleep), then drop our finalizer. Namespaced objects go by
   garbage collection through their owner references.
2. Sizing (``needs``) and the node plan (``nodes``). Before the first NodeClaim is created the
   Workspace gets our finalizer, so a claim can never outlive it.
3. When the nodes are ready: the workload, as ``plan.plan_workload`` decides it (what to apply,
   what to delete, the rollout strategy and the Events); the shell only carries it out.
4. Status (``status``), written only when it differs, with Events for the changes.

Every write batch first checks that this replica still leads (``NotLeaderError`` otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from api.config import DEFAULT_CONFIG, AdminConfig, parse_config
from api.defaults import default
from api.errors import KaitoApiError
from api.inference_config import InferenceConfig
from api.presets import PresetCatalog
from api.skus import SkuCatalog
from api.workspace import Workspace
from reconciler import inference_config
from reconciler.errors import ApiError, NotLeaderError
from reconciler.labels import FINALIZER
from reconciler.needs import REASON_INVALID_SPEC, Needs, Unsatisfiable, compute_needs
from reconciler.nodes import NodeClassRef, NodePlan, plan_nodes
from reconciler.observe import Obj, slim
from reconciler.outcome import (
    DONE,
    Result,
    after_status,
    claim_refusal,
    refused,
    refused_workload,
    requeue_after,
    retried,
)
from reconciler.plan import (
    ObservedWorkload,
    WorkloadPlan,
    desired_workload,
    images_for,
    needs_free_gpus,
    owned,
    plan_workload,
)
from reconciler.resources import BY_KIND, NODECLAIMS, PODS, WORKSPACES
from reconciler.spec_check import spec_problems
from reconciler.status import (
    Cond,
    EventSpec,
    build_status,
    inference_condition,
    model_access_secret,
    same_status,
    status_events,
)
from reconciler.workload import Images, free_gpus, headless_name, service_host
from reconciler.writes import (
    claim_created_event,
    claim_event_name,
    claims_of,
    deleting_event,
    event_manifest,
    finalizer_removal,
    has_finalizer,
    now_rfc3339,
    stored_worker_nodes,
    workspace_body,
)

if TYPE_CHECKING:
    from reconciler.informer import Informer
    from reconciler.kube import Kube
    from reconciler.metrics import Metrics

log = logging.getLogger(__name__)

Key = tuple[str, str]
CLAIMS_GONE_REQUEUE_S = 2.0
"""Look again this soon for NodeClaims being deleted (their watch usually wakes us first)."""


# ---------------------------------------------------------------------------- the shell


@dataclass
class Caches:
    workspaces: Informer
    deployments: Informer
    statefulsets: Informer
    services: Informer
    pods: Informer
    nodeclaims: Informer
    nodes: Informer
    config: Informer | None = None
    inference_configs: Informer | None = None
    """ConfigMaps named by ``inference.config`` (``reconciler.inference_config.project``)."""


@dataclass
class Options:
    images: Images
    node_class: NodeClassRef
    pending_requeue_s: float
    field_manager: str
    identity: str
    config_name: str = ""


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        caches: Caches,
        options: Options,
        *,
        presets: PresetCatalog,
        skus: SkuCatalog,
        metrics: Metrics | None = None,
        leading: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.caches = caches
        self.options = options
        self.presets = presets
        self.base_skus = skus
        self.metrics = metrics
        self.leading = leading
        self.now = now
        self._config: tuple[str, AdminConfig] = ("", DEFAULT_CONFIG)
        self._announced: set[str] = set()
        """NodeClaim uids whose ``NodeClaimCreated`` Event this process has made sure of."""

    # ------------------------------------------------------------------ plumbing

    def admin_config(self) -> AdminConfig:
        """The admin ConfigMap, parsed once per resourceVersion; the last good one on errors."""
        if self.caches.config is None:
            return DEFAULT_CONFIG
        objs = self.caches.config.values()
        if not objs:
            return DEFAULT_CONFIG
        cm = objs[0]
        rv = str(cm["metadata"].get("resourceVersion", ""))
        if rv != self._config[0]:
            try:
                parsed = parse_config(
                    cm.get("data") or {}, presets=self.presets, skus=self.base_skus
                )
            except KaitoApiError as exc:
                log.error(
                    "admin ConfigMap %s is invalid, keeping the last good one: %s",
                    cm["metadata"].get("name"),
                    exc,
                )
                parsed = self._config[1]
            self._config = (rv, parsed)
        return self._config[1]

    def _guard(self) -> None:
        if not self.leading():
            raise NotLeaderError("this replica no longer holds the Lease; not writing")

    def _count(self, kind: str, op: str) -> None:
        if self.metrics is not None:
            self.metrics.writes.labels(kind, op).inc()

    async def _apply(self, obj: Obj, cache: Informer | None) -> Obj:
        result = await self.kube.apply(obj)
        self._count(obj["kind"], "apply")
        if cache is not None:
            cache.put(result)
        return result

    def _event(self, ws_obj: Obj, spec: EventSpec, *, name: str = "", at: str = "") -> Obj:
        opts, now = self.options, self.now()
        return event_manifest(
            ws_obj,
            spec,
            now=now,
            component=opts.field_manager,
            instance=opts.identity,
            name=name,
            at=at,
        )

    async def _events(self, ws_obj: Obj, specs: Sequence[EventSpec]) -> None:
        for spec in specs:
            try:
                await self.kube.event(self._event(ws_obj, spec))
                self._count("Event", "create")
            except (ApiError, OSError) as exc:
                log.warning("event %s for %s: %s", spec.reason, ws_obj["metadata"]["name"], exc)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> Result:
        """Reconcile the Workspace ``key`` (namespace, name)."""
        namespace, name = key
        ws_obj = self.caches.workspaces.get(namespace, name)
        claims = claims_of(self.caches.nodeclaims.values(), namespace, name)
        if ws_obj is None:
            return await self._delete_claims(None, claims)
        config = self.admin_config()
        if (ws_obj.get("metadata") or {}).get("deletionTimestamp"):
            return await self._finalize(ws_obj, claims)
        ws = await self._admit(ws_obj, config)
        if ws is None:
            return DONE
        nodes = {o["metadata"]["name"]: o for o in self.caches.nodes.values()}
        skus = config.sku_catalog(self.base_skus)
        needs = compute_needs(ws, presets=self.presets, skus=skus, config=config, nodes=nodes)
        if isinstance(needs, Unsatisfiable):
            await self._write_unready(ws_obj, ws, Cond(False, needs.reason, needs.message))
            return DONE

        await self._announce_claims(ws_obj, claims)
        plan = plan_nodes(ws, needs, nodes=nodes, claims=claims, ref=self.options.node_class)
        if plan.create:
            await self._create_claims(ws_obj, ws, plan)
        settings = self._inference_config(ws)
        refusal: ApiError | None = None
        if plan.ready and not isinstance(settings, inference_config.Problem):
            workload, refusal = await self._workload(
                ws, ws_obj, needs=needs, plan=plan, nodes=nodes, config=config, settings=settings
            )
        else:  # nodes not ready, or a bad inference.config: the workload is left as it is
            workload = self._observed_workload(ws, needs)
        resource = Cond(plan.ready, plan.reason, plan.message)
        inference = inference_condition(
            resource=resource,
            workload=workload,
            pods=owned(self.caches.pods.values(), namespace, name),
            replicas=needs.replicas,
            endpoint=f"http://{service_host(ws)}:80",
            model_access_secret=model_access_secret(ws),
        )
        if isinstance(settings, inference_config.Problem):
            inference = Cond(False, settings.reason, settings.message)
        inference = refused_workload(inference, refusal)
        worker_nodes = list(plan.selected) if plan.ready else list(ws.status.worker_nodes)
        await self._write_status(ws_obj, resource, inference, worker_nodes)
        if refusal is not None and retried(refusal):
            raise refusal
        pending = self.options.pending_requeue_s
        return after_status(resource, inference, refusal=refusal, pending_requeue_s=pending)

    async def _admit(self, ws_obj: Obj, config: AdminConfig) -> Workspace | None:
        """The defaulted Workspace, or None (with an InvalidSpec status) when the webhook's rules
        refuse it: the Workspace may never have been admitted."""
        problems = spec_problems(ws_obj, config=config, presets=self.presets, skus=self.base_skus)
        try:
            ws = None if problems else Workspace.from_dict(default(ws_obj, config))
        except KaitoApiError as exc:
            problems, ws = f"{exc}; fix the Workspace and apply it again", None
        if ws is None:
            bad = Cond(False, REASON_INVALID_SPEC, problems)
            await self._write_status(ws_obj, bad, bad, stored_worker_nodes(ws_obj))
        return ws

    async def _write_unready(self, ws_obj: Obj, ws: Workspace, resource: Cond) -> None:
        """Status for a Workspace whose nodes cannot be had (yet): no workload to look at."""
        inference = inference_condition(
            resource=resource, workload=None, pods=[], replicas=1, endpoint=""
        )
        await self._write_status(ws_obj, resource, inference, list(ws.status.worker_nodes))

    def _inference_config(self, ws: Workspace) -> InferenceConfig | inference_config.Problem | None:
        """The Workspace's ``inference.config`` settings, judged again on every reconcile."""
        name = inference_config.config_name(ws)
        if name is None:
            return None
        cache = self.caches.inference_configs
        cm = None if cache is None else cache.get(ws.namespace, name)
        return inference_config.judge(ws, cm)

    def _observed_workload(self, ws: Workspace, needs: Needs) -> Obj | None:
        cache = self.caches.statefulsets if needs.multi_node else self.caches.deployments
        return cache.get(ws.namespace, ws.name)

    async def _ensure_finalizer(self, ws_obj: Obj) -> None:
        if has_finalizer(ws_obj):
            return
        result = await self.kube.apply(workspace_body(ws_obj, finalizers=[FINALIZER]))
        self._count("Workspace", "finalizer")
        self.caches.workspaces.put(result)

    async def _create_claims(self, ws_obj: Obj, ws: Workspace, plan: NodePlan) -> None:
        """Create the planned NodeClaims (after our finalizer); a refusal the user can act on
        goes to status, and the error goes on to the loop's backoff either way."""
        self._guard()
        try:
            await self._ensure_finalizer(ws_obj)
            created = [await self._apply(claim, self.caches.nodeclaims) for claim in plan.create]
        except ApiError as exc:
            claim_refused = claim_refusal(exc)
            if claim_refused is not None:
                await self._write_unready(ws_obj, ws, claim_refused)
            raise
        await self._announce_claims(ws_obj, created)

    async def _announce_claims(self, ws_obj: Obj, claims: Sequence[Obj]) -> None:
        """The ``NodeClaimCreated`` Event of each claim, once per claim and process: made from
        the claim (its name and creation time), so a crash between creating a claim and its
        Event loses nothing; an Event already there is a conflict, ignored."""
        ws_name = str(ws_obj["metadata"]["name"])
        for claim in claims:
            meta = claim.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if not uid or uid in self._announced or meta.get("deletionTimestamp"):
                continue
            if not self.leading():
                return
            try:
                at = str(meta.get("creationTimestamp") or "")
                spec, event_name = claim_created_event(claim), claim_event_name(ws_name, claim)
                await self.kube.event(self._event(ws_obj, spec, name=event_name, at=at))
                self._count("Event", "create")
            except ApiError as exc:
                if exc.status != 409:
                    log.warning("event NodeClaimCreated for %s: %s", ws_name, exc)
                    continue
            except OSError as exc:
                log.warning("event NodeClaimCreated for %s: %s", ws_name, exc)
                continue
            self._announced.add(uid)

    def _observe(self, ws: Workspace) -> ObservedWorkload:
        caches = self._workload_caches()
        names = (ws.name, headless_name(ws))
        named = {
            (kind, name): obj
            for kind, cache in caches.items()
            for name in names
            if (obj := cache.get(ws.namespace, name)) is not None
        }
        mine = [o for c in caches.values() for o in owned(c.values(), ws.namespace, ws.name)]
        return ObservedWorkload(named=named, owned=mine)

    def _workload_caches(self) -> dict[str, Informer]:
        """By kind, in the order of ``plan.WORKLOAD_KINDS``."""
        return {
            "Deployment": self.caches.deployments,
            "StatefulSet": self.caches.statefulsets,
            "Service": self.caches.services,
        }

    async def _workload(
        self,
        ws: Workspace,
        ws_obj: Obj,
        *,
        needs: Needs,
        plan: NodePlan,
        nodes: Mapping[str, Obj],
        config: AdminConfig,
        settings: InferenceConfig | None,
    ) -> tuple[Obj | None, ApiError | None]:
        """Plan the workload and carry the plan out; the workload as it then is, and the
        apiserver's refusal of what we render, if it refused (other errors go to the loop's
        backoff)."""
        observed = self._observe(ws)
        desired = desired_workload(
            ws,
            needs,
            selected=plan.selected,
            images=images_for(config, self.options.images),
            observed=observed,
            default_strength=config.default_adapter_strength,
            settings=settings,
        )
        try:
            free = None
            if needs_free_gpus(desired, observed, needs):
                free = await self._free_gpus(plan.selected, nodes)
            todo = plan_workload(
                ws, needs, desired, observed, selected=plan.selected, free_gpus=free
            )
            return await self._carry_out(ws, ws_obj, todo, observed), None
        except ApiError as exc:
            if not refused(exc):
                raise
            return self._observed_workload(ws, needs), exc

    async def _carry_out(
        self, ws: Workspace, ws_obj: Obj, todo: WorkloadPlan, observed: ObservedWorkload
    ) -> Obj | None:
        """Deletes, applies, then Events; the workload as applied (else as observed)."""
        if todo.writes:
            self._guard()
        caches = self._workload_caches()
        for obj in todo.delete:
            name = obj["metadata"]["name"]
            uid = obj["metadata"].get("uid")
            await self.kube.delete(BY_KIND[obj["kind"]], name, ws.namespace, uid=uid)
            self._count(obj["kind"], "delete")
            caches[obj["kind"]].forget(ws.namespace, name)
        result = observed.get(todo.workload["kind"], ws.name)
        for obj in todo.apply:
            applied = await self._apply(obj, caches[obj["kind"]])
            if obj is todo.workload:
                result = slim(applied)
        await self._events(ws_obj, todo.events)
        return result

    async def _free_gpus(self, selected: Sequence[str], nodes: Mapping[str, Obj]) -> int:
        """GPUs free on the chosen nodes: every Pod on them counts, not only ours."""
        pods: list[Obj] = []
        for node in selected:
            listed = await self.kube.list(PODS, field_selector=f"spec.nodeName={node}")
            pods += [slim(p) for p in listed.items]
        return free_gpus({n: nodes[n] for n in selected if n in nodes}, pods)

    async def _write_status(
        self, ws_obj: Obj, resource: Cond, inference: Cond, worker_nodes: Sequence[str]
    ) -> None:
        meta = ws_obj.get("metadata") or {}
        old = ws_obj.get("status")
        new = build_status(
            old=old,
            generation=int(meta.get("generation") or 0),
            resource=resource,
            inference=inference,
            worker_nodes=worker_nodes,
            now=now_rfc3339(self.now()),
        )
        if same_status(old, new):
            return
        self._guard()
        result = await self.kube.apply(workspace_body(ws_obj, status=new), subresource="status")
        self._count("Workspace", "status")
        self.caches.workspaces.put(result)
        await self._events(ws_obj, status_events(old, new))

    async def _finalize(self, ws_obj: Obj, claims: list[Obj]) -> Result:
        meta = ws_obj["metadata"]
        if claims:
            return await self._delete_claims(ws_obj, claims)
        if not has_finalizer(ws_obj):
            return DONE
        self._guard()
        result = await self.kube.apply(workspace_body(ws_obj))
        self._count("Workspace", "finalizer")
        removal = finalizer_removal(result)
        if removal is not None:
            await self.kube.patch(WORKSPACES, meta["name"], meta["namespace"], removal)
        log.info(
            "workspace %s/%s: NodeClaims gone, finalizer removed", meta["namespace"], meta["name"]
        )
        return DONE

    async def _delete_claims(self, ws_obj: Obj | None, claims: list[Obj]) -> Result:
        if not claims:
            return DONE
        pending = [c for c in claims if not c["metadata"].get("deletionTimestamp")]
        if pending:
            self._guard()
            for c in pending:
                await self.kube.delete(
                    NODECLAIMS, c["metadata"]["name"], uid=c["metadata"].get("uid")
                )
                self._count("NodeClaim", "delete")
            if ws_obj is not None:
                await self._events(ws_obj, [deleting_event(pending)])
        # The NodeClaim watch wakes us when they are gone; this is the fallback.
        return requeue_after(CLAIMS_GONE_REQUEUE_S)
