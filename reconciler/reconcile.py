"""One reconcile of one Workspace: read the caches, call the pure functions, write the difference.

The steps, each idempotent so that a crash between any two of them is harmless:

1. A deleted Workspace (or a NodeClaim whose Workspace is gone): delete its NodeClaims, wait for
   them to go (a requeue, not a sleep), then drop our finalizer. Namespaced objects go by
   garbage collection through their owner references.
2. Sizing (``needs``) and the node plan (``nodes``). Before the first NodeClaim is created the
   Workspace gets our finalizer, so a claim can never outlive it.
3. When the nodes are ready: the workload (``workload.render``). An object is applied only when
   it is missing, when our intent changed (a hash of the desired manifest, kept in an
   annotation, differs) or when someone changed our fields (the desired manifest is no longer a
   subset of the object). A Pod-template change picks the rollout strategy from the free GPUs
   on the nodes and says so in an Event.
4. Status (``status``), written only when it differs, with Events for the changes.

Every write batch first checks that this replica still leads (``NotLeaderError`` otherwise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.config import DEFAULT_CONFIG, AdminConfig, parse_config
from api.defaults import default
from api.errors import KaitoApiError
from api.inference_config import InferenceConfig
from api.presets import PresetCatalog
from api.skus import SkuCatalog
from api.workspace import Runtime, Workspace
from reconciler import inference_config
from reconciler.errors import ApiError, NotLeaderError
from reconciler.labels import FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.needs import REASON_INVALID_SPEC, Needs, Unsatisfiable, compute_needs
from reconciler.nodes import NodeClassRef, NodePlan, plan_nodes
from reconciler.observe import Obj, slim
from reconciler.resources import (
    DEPLOYMENTS,
    NODECLAIMS,
    PODS,
    SERVICES,
    STATEFULSETS,
    WORKSPACES,
)
from reconciler.spec_check import spec_problems
from reconciler.status import (
    REASON_DELETING,
    REASON_WORKLOAD_REFUSED,
    Cond,
    EventSpec,
    build_status,
    inference_condition,
    model_access_secret,
    same_status,
    status_events,
)
from reconciler.workload import (
    Images,
    Strategy,
    choose_strategy,
    free_gpus,
    render,
    service_host,
)

if TYPE_CHECKING:
    from reconciler.informer import Informer
    from reconciler.kube import Kube
    from reconciler.metrics import Metrics

log = logging.getLogger(__name__)

ANNOTATION_DESIRED_HASH = "kaito.sh/desired-hash"
REFUSED = (400, 403, 422)
"""API answers that retrying the same request will not change: reported in status."""
TYPED_PATCH_FAILURES = ("failed to create typed patch object", "not declared in schema")
"""What the apiserver says (with HTTP 500) when an apply body does not fit the object's
schema, e.g. an unknown field in a template Workspace's Pod template."""


def refused(exc: ApiError) -> bool:
    """The apiserver refused the request itself: the same request will be refused again."""
    if exc.status in REFUSED:
        return True
    return exc.status == 500 and any(words in exc.message for words in TYPED_PATCH_FAILURES)


def refusal_hint(exc: ApiError) -> str:
    """What to do about a refused workload."""
    if exc.status == 403:
        return (
            "check the reconciler's RBAC (create and patch on deployments, statefulsets and "
            "services) and admission policies, then the reconciler's logs"
        )
    return (
        "the Workspace renders an object the apiserver does not accept (for a template "
        "Workspace: check inference.template against the Pod spec), fix it and apply the "
        "Workspace again"
    )


REASON_NODECLAIM_REFUSED = "NodeClaimRefused"


def claim_refusal(exc: ApiError) -> Cond | None:
    """The ResourceReady condition for a NodeClaim create the apiserver refused, or None for
    an error worth retrying silently. The create is retried with backoff either way (the
    caller re-raises), so installing Karpenter or fixing RBAC later heals the Workspace."""
    if exc.status == 404:
        why = (
            f"the NodeClaim API is not installed ({exc}): install Karpenter (it provides "
            "nodeclaims.karpenter.sh) or list prepared GPU nodes in resource.preferredNodes"
        )
    elif exc.status in REFUSED:
        why = (
            f"the apiserver refused the NodeClaim: {exc}; check the reconciler's RBAC "
            "(create and patch on nodeclaims.karpenter.sh) and the NodeClaim CRD"
        )
    else:
        return None
    return Cond(False, REASON_NODECLAIM_REFUSED, why)


Key = tuple[str, str]


# ---------------------------------------------------------------------------- pure helpers


def desired_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    """The manifest with the hash of itself in an annotation."""
    h = desired_hash(obj)
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_DESIRED_HASH: h}
    return {**obj, "metadata": meta}


def is_subset(want: Any, have: Any) -> bool:
    """Every field of ``want`` is in ``have`` with the same value (lists: same length, element by
    element); fields the server added are ignored."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and is_subset(v, have[k]) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    if isinstance(want, int | float) and not isinstance(want, bool) and isinstance(have, str):
        return str(want) == have
    return bool(want == have)


def needs_apply(desired: Obj, observed: Obj | None) -> bool:
    """``desired`` carries its hash annotation (``with_hash``)."""
    if observed is None:
        return True
    want = desired["metadata"]["annotations"][ANNOTATION_DESIRED_HASH]
    have = ((observed.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DESIRED_HASH)
    if want != have:
        return True
    return not is_subset({k: v for k, v in desired.items() if k != "status"}, observed)


def strategy_of(observed: Obj | None) -> Strategy | None:
    rolling = (((observed or {}).get("spec") or {}).get("strategy") or {}).get("rollingUpdate")
    if not isinstance(rolling, Mapping):
        return None
    return "surge" if str(rolling.get("maxSurge")) == "1" else "recreate"


def claims_of(claims: Sequence[Obj], namespace: str, name: str) -> list[Obj]:
    out = []
    for c in claims:
        labels = (c.get("metadata") or {}).get("labels") or {}
        if (
            labels.get(LABEL_WORKSPACE) == name
            and labels.get(LABEL_WORKSPACE_NAMESPACE) == namespace
        ):
            out.append(c)
    return out


def owned(objs: Sequence[Obj], namespace: str, name: str) -> list[Obj]:
    return [
        o
        for o in objs
        if (o.get("metadata") or {}).get("namespace") == namespace
        and ((o.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKSPACE) == name
    ]


def _worker_nodes(ws_obj: Obj) -> list[str]:
    """``status.workerNodes`` as stored, when it has the right shape."""
    nodes = (ws_obj.get("status") or {}).get("workerNodes")
    return [n for n in nodes if isinstance(n, str)] if isinstance(nodes, list) else []


def claim_created_event(claim: Mapping[str, Any]) -> EventSpec:
    """The ``NodeClaimCreated`` Event of a claim, from the claim itself."""
    requirements = (claim.get("spec") or {}).get("requirements") or [{}]
    values = requirements[0].get("values") or ["GPU"]
    return EventSpec(
        "Normal",
        "NodeClaimCreated",
        f"created NodeClaim {claim['metadata']['name']} for a {values[0]} node",
    )


def claim_event_name(ws_name: str, claim: Mapping[str, Any]) -> str:
    """One Event name per claim: re-emitting it after a crash is a harmless conflict."""
    return f"{ws_name}.{claim['metadata']['name']}.created"[:253]


def now_rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_manifest(
    ws_obj: Mapping[str, Any],
    spec: EventSpec,
    *,
    now: datetime,
    component: str,
    instance: str,
    name: str = "",
    at: str = "",
) -> Obj:
    """An Event about the Workspace; ``name`` (default: random) and ``at`` (the time of what
    happened, default: now) make an Event re-emitted from state the same as the first."""
    meta = ws_obj.get("metadata") or {}
    ts = at or now_rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": name or f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": WORKSPACES.api_version,
            "kind": WORKSPACES.kind,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": spec.type,
        "reason": spec.reason,
        "message": spec.message[:1024],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
    }


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

    async def _events(self, ws_obj: Obj, specs: Sequence[EventSpec]) -> None:
        for spec in specs:
            try:
                await self.kube.event(
                    event_manifest(
                        ws_obj,
                        spec,
                        now=self.now(),
                        component=self.options.field_manager,
                        instance=self.options.identity,
                    )
                )
                self._count("Event", "create")
            except (ApiError, OSError) as exc:
                log.warning("event %s for %s: %s", spec.reason, ws_obj["metadata"]["name"], exc)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> float | None:
        """Reconcile the Workspace ``key`` (namespace, name); returns a requeue delay or None."""
        namespace, name = key
        ws_obj = self.caches.workspaces.get(namespace, name)
        claims = claims_of(self.caches.nodeclaims.values(), namespace, name)
        if ws_obj is None:
            return await self._delete_claims(None, claims)
        config = self.admin_config()
        if (ws_obj.get("metadata") or {}).get("deletionTimestamp"):
            return await self._finalize(ws_obj, claims)
        # The webhook's rules again: the Workspace may never have been admitted.
        problems = spec_problems(ws_obj, config=config, presets=self.presets, skus=self.base_skus)
        ws: Workspace | None = None
        try:
            ws = None if problems else Workspace.from_dict(default(ws_obj, config))
        except KaitoApiError as exc:
            problems = f"{exc}; fix the Workspace and apply it again"
        if ws is None:
            bad = Cond(False, REASON_INVALID_SPEC, problems)
            await self._write_status(ws_obj, bad, bad, _worker_nodes(ws_obj))
            return None

        nodes = {o["metadata"]["name"]: o for o in self.caches.nodes.values()}
        skus = config.sku_catalog(self.base_skus)
        needs = compute_needs(ws, presets=self.presets, skus=skus, config=config, nodes=nodes)
        if isinstance(needs, Unsatisfiable):
            resource = Cond(False, needs.reason, needs.message)
            inference = inference_condition(
                resource=resource, workload=None, pods=[], replicas=1, endpoint=""
            )
            await self._write_status(ws_obj, resource, inference, list(ws.status.worker_nodes))
            return None

        await self._announce_claims(ws_obj, claims)
        plan = plan_nodes(ws, needs, nodes=nodes, claims=claims, ref=self.options.node_class)
        if plan.create:
            try:
                await self._create_claims(ws_obj, plan)
            except ApiError as exc:
                claim_refused = claim_refusal(exc)
                if claim_refused is None:
                    raise
                await self._write_status(
                    ws_obj,
                    claim_refused,
                    inference_condition(
                        resource=claim_refused, workload=None, pods=[], replicas=1, endpoint=""
                    ),
                    list(ws.status.worker_nodes),
                )
                raise
        workload: Obj | None = None
        refusal: ApiError | None = None
        settings = self._inference_config(ws)
        if isinstance(settings, inference_config.Problem):
            workload = self._observed_workload(ws, needs)  # left as it is
        elif plan.ready:
            try:
                workload = await self._apply_workload(
                    ws=ws,
                    ws_obj=ws_obj,
                    needs=needs,
                    plan=plan,
                    nodes=nodes,
                    config=config,
                    settings=settings,
                )
            except ApiError as exc:
                if not refused(exc):
                    raise
                refusal = exc  # the apiserver refuses what we render: say so
                workload = self._observed_workload(ws, needs)
        else:
            workload = self._observed_workload(ws, needs)
        pods = owned(self.caches.pods.values(), namespace, name)
        resource = Cond(plan.ready, plan.reason, plan.message)
        inference = inference_condition(
            resource=resource,
            workload=workload,
            pods=pods,
            replicas=needs.replicas,
            endpoint=f"http://{service_host(ws)}:80",
            model_access_secret=model_access_secret(ws),
        )
        if isinstance(settings, inference_config.Problem):
            inference = Cond(False, settings.reason, settings.message)
        if refusal is not None:
            inference = Cond(
                False,
                REASON_WORKLOAD_REFUSED,
                f"the apiserver refused the workload: {refusal}; {refusal_hint(refusal)}",
            )
        worker_nodes = list(plan.selected) if plan.ready else list(ws.status.worker_nodes)
        await self._write_status(ws_obj, resource, inference, worker_nodes)
        if refusal is not None:
            if refusal.status == 403:
                raise refusal  # RBAC can be fixed without touching the Workspace: retry
            return None  # the same spec is refused again: wait for a change (or the resync)
        if resource.ok and inference.ok:
            return None
        return self.options.pending_requeue_s

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
        if FINALIZER in ((ws_obj.get("metadata") or {}).get("finalizers") or []):
            return
        meta = ws_obj["metadata"]
        result = await self.kube.apply(
            {
                "apiVersion": WORKSPACES.api_version,
                "kind": WORKSPACES.kind,
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "finalizers": [FINALIZER],
                },
            }
        )
        self._count("Workspace", "finalizer")
        self.caches.workspaces.put(result)

    async def _create_claims(self, ws_obj: Obj, plan: NodePlan) -> None:
        self._guard()
        await self._ensure_finalizer(ws_obj)
        created = [await self._apply(claim, self.caches.nodeclaims) for claim in plan.create]
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
                await self.kube.event(
                    event_manifest(
                        ws_obj,
                        claim_created_event(claim),
                        now=self.now(),
                        component=self.options.field_manager,
                        instance=self.options.identity,
                        name=claim_event_name(ws_name, claim),
                        at=str(meta.get("creationTimestamp") or ""),
                    )
                )
                self._count("Event", "create")
            except ApiError as exc:
                if exc.status != 409:
                    log.warning("event NodeClaimCreated for %s: %s", ws_name, exc)
                    continue
            except OSError as exc:
                log.warning("event NodeClaimCreated for %s: %s", ws_name, exc)
                continue
            self._announced.add(uid)

    async def _apply_workload(
        self,
        *,
        ws: Workspace,
        ws_obj: Obj,
        needs: Needs,
        plan: NodePlan,
        nodes: Mapping[str, Obj],
        config: AdminConfig,
        settings: InferenceConfig | None = None,
    ) -> Obj | None:
        kind_cache = self.caches.statefulsets if needs.multi_node else self.caches.deployments
        observed = kind_cache.get(ws.namespace, ws.name)
        images = Images(
            vllm=config.runtime_images.get(Runtime.VLLM, self.options.images.vllm),
            transformers=config.runtime_images.get(
                Runtime.TRANSFORMERS, self.options.images.transformers
            ),
            vllm_cpu=config.vllm_cpu_image or self.options.images.vllm_cpu,
        )
        strategy: Strategy = strategy_of(observed) or "recreate"
        draft = render(
            ws,
            needs,
            nodes=plan.selected,
            images=images,
            strategy=strategy,
            default_strength=config.default_adapter_strength,
        )
        if settings is not None:
            draft[-1] = inference_config.apply(draft[-1], needs.runtime, settings)
        workload_obj = draft[-1]
        events: list[EventSpec] = []
        template_changed = observed is not None and not is_subset(
            workload_obj["spec"]["template"], (observed.get("spec") or {}).get("template")
        )
        if template_changed and workload_obj["kind"] == "Deployment":
            strategy = await self._choose_strategy(ws, needs, plan, nodes)
            draft = render(
                ws,
                needs,
                nodes=plan.selected,
                images=images,
                strategy=strategy,
                default_strength=config.default_adapter_strength,
            )
            if settings is not None:
                draft[-1] = inference_config.apply(draft[-1], needs.runtime, settings)
            workload_obj = draft[-1]
        if template_changed:
            how = (
                "a new Pod starts beside the old one, which serves until the new one is ready"
                if strategy == "surge" and workload_obj["kind"] == "Deployment"
                else "the nodes have no free GPU for a second Pod, so the update recreates the "
                "Pod: the model is unavailable until the new Pod is ready"
            )
            events.append(
                EventSpec(
                    "Normal",
                    "WorkloadUpdated",
                    f"{workload_obj['kind']} {ws.name}: the Pod template changed; {how}",
                )
            )
        desired = [with_hash(o) for o in draft]
        caches = {
            "Deployment": self.caches.deployments,
            "StatefulSet": self.caches.statefulsets,
            "Service": self.caches.services,
        }
        todo = [
            o
            for o in desired
            if needs_apply(o, caches[o["kind"]].get(ws.namespace, o["metadata"]["name"]))
        ]
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        stale = [
            o
            for cache in (self.caches.deployments, self.caches.statefulsets, self.caches.services)
            for o in owned(cache.values(), ws.namespace, ws.name)
            if (o["kind"], o["metadata"]["name"]) not in wanted
        ]
        if todo or stale:
            self._guard()
        for obj in stale:
            resource = {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS}.get(
                obj["kind"], SERVICES
            )
            await self.kube.delete(
                resource, obj["metadata"]["name"], ws.namespace, uid=obj["metadata"].get("uid")
            )
            self._count(obj["kind"], "delete")
            caches[obj["kind"]].forget(ws.namespace, obj["metadata"]["name"])
        result: Obj | None = kind_cache.get(ws.namespace, ws.name)
        for obj in todo:
            applied = await self._apply(obj, caches[obj["kind"]])
            if obj is desired[-1]:
                result = slim(applied)
        if observed is None and any(o is desired[-1] for o in todo):
            events.append(
                EventSpec(
                    "Normal",
                    "WorkloadCreated",
                    f"created {workload_obj['kind']} {ws.name} and Service {ws.name} on "
                    f"{', '.join(plan.selected)}",
                )
            )
        await self._events(ws_obj, events)
        return result

    async def _choose_strategy(
        self, ws: Workspace, needs: Needs, plan: NodePlan, nodes: Mapping[str, Obj]
    ) -> Strategy:
        """Surge when the chosen nodes have the GPUs for one more Pod (every Pod on them
        counts, not only ours). CPU Workspaces recreate: node memory is not tracked here, and
        a surge Pod that does not fit beside the old one would stall the rollout."""
        if needs.cpu is not None:
            return "recreate"
        pods: list[Obj] = []
        for node in plan.selected:
            listed = await self.kube.list(PODS, field_selector=f"spec.nodeName={node}")
            pods += [slim(p) for p in listed.items]
        chosen = {n: nodes[n] for n in plan.selected if n in nodes}
        return choose_strategy(needs.gpus_per_node, free_gpus(chosen, pods))

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
        body = {
            "apiVersion": WORKSPACES.api_version,
            "kind": WORKSPACES.kind,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": new,
        }
        result = await self.kube.apply(body, subresource="status")
        self._count("Workspace", "status")
        self.caches.workspaces.put(result)
        await self._events(ws_obj, status_events(old, new))

    async def _finalize(self, ws_obj: Obj, claims: list[Obj]) -> float | None:
        meta = ws_obj["metadata"]
        if claims:
            return await self._delete_claims(ws_obj, claims)
        if FINALIZER not in (meta.get("finalizers") or []):
            return None
        self._guard()
        result = await self.kube.apply(
            {
                "apiVersion": WORKSPACES.api_version,
                "kind": WORKSPACES.kind,
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            }
        )
        self._count("Workspace", "finalizer")
        if FINALIZER in ((result.get("metadata") or {}).get("finalizers") or []):
            # Someone else (an older field manager) owns the entry: remove it by index.
            fins = result["metadata"]["finalizers"]
            i = fins.index(FINALIZER)
            await self.kube.patch(
                WORKSPACES,
                meta["name"],
                meta["namespace"],
                [
                    {"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{i}"},
                ],
            )
        log.info(
            "workspace %s/%s: NodeClaims gone, finalizer removed", meta["namespace"], meta["name"]
        )
        return None

    async def _delete_claims(self, ws_obj: Obj | None, claims: list[Obj]) -> float | None:
        if not claims:
            return None
        pending = [c for c in claims if not c["metadata"].get("deletionTimestamp")]
        if pending:
            self._guard()
            for c in pending:
                await self.kube.delete(
                    NODECLAIMS, c["metadata"]["name"], uid=c["metadata"].get("uid")
                )
                self._count("NodeClaim", "delete")
            if ws_obj is not None:
                await self._events(
                    ws_obj,
                    [
                        EventSpec(
                            "Normal",
                            REASON_DELETING,
                            "deleting NodeClaims "
                            + ", ".join(c["metadata"]["name"] for c in pending),
                        )
                    ],
                )
        # The NodeClaim watch wakes us when they are gone; this is the fallback.
        return 2.0
