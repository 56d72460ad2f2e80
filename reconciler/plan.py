"""What one reconcile writes for a Workspace's workload (pure): the plan the shell carries out.

``plan_workload`` takes the rendered objects (``desired_workload``: ``workload.render`` once, plus
the ``inference.config`` settings) and what the caches hold (``ObservedWorkload``) and decides:

* what to apply: an object is applied only when it is missing, when our intent changed (a hash
  of the desired manifest, kept in an annotation, differs) or when someone changed our fields
  (the desired manifest is no longer a subset of the object);
* what to delete: objects the Workspace owns that it no longer renders (a Deployment after a
  switch to a StatefulSet, a headless Service no longer needed);
* the rollout strategy of a Deployment whose Pod template changed: a surge when the chosen
  nodes have the free GPUs for one more Pod (``needs_free_gpus`` tells the shell when to count
  them), else a recreate; an unchanged template keeps the strategy it has;
* the Events: ``WorkloadUpdated`` (saying how the Pod is replaced) and ``WorkloadCreated``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.config import AdminConfig
from api.inference_config import InferenceConfig
from api.workspace import Runtime, Workspace
from reconciler import inference_config
from reconciler.labels import LABEL_WORKSPACE
from reconciler.needs import Needs
from reconciler.observe import Obj
from reconciler.status import EventSpec
from reconciler.workload import Images, Strategy, choose_strategy, render, rolling_update

ANNOTATION_DESIRED_HASH = "kaito.sh/desired-hash"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Service")
"""The kinds of a workload, in the order their stale objects are deleted."""

SURGE_HOW = "a new Pod starts beside the old one, which serves until the new one is ready"
RECREATE_HOW = (
    "the nodes have no free GPU for a second Pod, so the update recreates the "
    "Pod: the model is unavailable until the new Pod is ready"
)


# ---------------------------------------------------------------------------- apply decisions


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


def name_of(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def owned(objs: Sequence[Obj], namespace: str, name: str) -> list[Obj]:
    """The objects of ``namespace`` labelled as the Workspace ``name``'s."""
    return [
        o
        for o in objs
        if (o.get("metadata") or {}).get("namespace") == namespace
        and ((o.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKSPACE) == name
    ]


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ObservedWorkload:
    """What the caches hold of a Workspace's workload."""

    named: Mapping[tuple[str, str], Obj]
    """(kind, name) → the object of that kind and name in the Workspace's namespace, for the
    names the Workspace renders (ours or not)."""
    owned: Sequence[Obj] = ()
    """Every Deployment, StatefulSet and Service labelled as the Workspace's, in the order of
    ``WORKLOAD_KINDS``."""

    def get(self, kind: str, name: str) -> Obj | None:
        return self.named.get((kind, name))


@dataclass(frozen=True)
class WorkloadPlan:
    """The writes of one reconcile, in order: delete, apply, then the Events."""

    workload: Obj
    """The desired Deployment or StatefulSet (with its hash), the last object of ``apply``
    when it is applied at all."""
    apply: tuple[Obj, ...] = ()
    """Objects to apply (server-side), in apply order: Services first."""
    delete: tuple[Obj, ...] = ()
    """Owned objects the Workspace no longer renders."""
    events: tuple[EventSpec, ...] = ()

    @property
    def writes(self) -> bool:
        return bool(self.apply or self.delete)


def images_for(config: AdminConfig, defaults: Images) -> Images:
    """The admin ConfigMap's runtime images, else the reconciler's."""
    return Images(
        vllm=config.runtime_images.get(Runtime.VLLM, defaults.vllm),
        transformers=config.runtime_images.get(Runtime.TRANSFORMERS, defaults.transformers),
        vllm_cpu=config.vllm_cpu_image or defaults.vllm_cpu,
    )


def desired_workload(
    ws: Workspace,
    needs: Needs,
    *,
    selected: Sequence[str],
    images: Images,
    observed: ObservedWorkload,
    default_strength: str = "1.0",
    settings: InferenceConfig | None = None,
) -> list[Obj]:
    """The workload objects (``workload.render``) with the ``inference.config`` settings, keeping
    the rollout strategy the observed Deployment has (``plan_workload`` changes it when the Pod
    template changes)."""
    strategy: Strategy = strategy_of(observed.get("Deployment", ws.name)) or "recreate"
    objects = render(
        ws,
        needs,
        nodes=selected,
        images=images,
        strategy=strategy,
        default_strength=default_strength,
    )
    if settings is not None:
        objects[-1] = inference_config.apply(objects[-1], needs.runtime, settings)
    return objects


def template_changed(desired: Sequence[Obj], observed: ObservedWorkload) -> bool:
    """The workload exists and its Pod template is not the desired one."""
    workload = desired[-1]
    have = observed.get(workload["kind"], workload["metadata"]["name"])
    return have is not None and not is_subset(
        workload["spec"]["template"], (have.get("spec") or {}).get("template")
    )


def needs_free_gpus(desired: Sequence[Obj], observed: ObservedWorkload, needs: Needs) -> bool:
    """The plan picks a rollout strategy from the free GPUs on the chosen nodes: a GPU
    Deployment's Pod template changes. (CPU Workspaces recreate: node memory is not tracked,
    and a surge Pod that does not fit beside the old one would stall the rollout.)"""
    return (
        needs.cpu is None
        and desired[-1]["kind"] == "Deployment"
        and template_changed(desired, observed)
    )


def with_strategy(workload: Obj, strategy: Strategy) -> Obj:
    """The Deployment with ``strategy``, as ``render`` writes it."""
    out = copy.copy(workload)
    out["spec"] = {**workload["spec"], "strategy": rolling_update(strategy)}
    return out


def rollout_strategy(desired: Sequence[Obj], needs: Needs, free_gpus: int | None) -> Strategy:
    """The strategy of a changed Pod template: a surge when the nodes have the GPUs for a second
    Pod; otherwise (a StatefulSet, a CPU Workspace, free GPUs not counted) a recreate."""
    if desired[-1]["kind"] != "Deployment" or needs.cpu is not None or free_gpus is None:
        return "recreate"
    return choose_strategy(needs.gpus_per_node, free_gpus)


def plan_workload(
    ws: Workspace,
    needs: Needs,
    desired: Sequence[Obj],
    observed: ObservedWorkload,
    *,
    selected: Sequence[str],
    free_gpus: int | None = None,
) -> WorkloadPlan:
    """The writes that bring the observed workload to ``desired`` (``desired_workload``);
    ``free_gpus``: the free GPUs on the chosen nodes when ``needs_free_gpus`` asked for them."""
    draft = list(desired)
    events: list[EventSpec] = []
    kind = draft[-1]["kind"]
    if template_changed(draft, observed):
        strategy = rollout_strategy(draft, needs, free_gpus)
        if kind == "Deployment":
            draft[-1] = with_strategy(draft[-1], strategy)
        how = SURGE_HOW if strategy == "surge" else RECREATE_HOW
        message = f"{kind} {ws.name}: the Pod template changed; {how}"
        events.append(EventSpec("Normal", "WorkloadUpdated", message))
    hashed = [with_hash(o) for o in draft]
    todo = tuple(o for o in hashed if needs_apply(o, observed.get(o["kind"], name_of(o))))
    wanted = {(o["kind"], name_of(o)) for o in hashed}
    stale = tuple(o for o in observed.owned if (o["kind"], name_of(o)) not in wanted)
    if observed.get(kind, ws.name) is None:
        message = f"created {kind} {ws.name} and Service {ws.name} on {', '.join(selected)}"
        events.append(EventSpec("Normal", "WorkloadCreated", message))
    return WorkloadPlan(workload=hashed[-1], apply=todo, delete=stale, events=tuple(events))
