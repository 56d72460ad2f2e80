"""The workload plan (``reconciler.plan``) and the outcome of a reconcile (``reconciler.outcome``):
what one reconcile applies, deletes and announces, for the cluster states that matter."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from api.config import DEFAULT_CONFIG
from api.presets import load_presets
from api.skus import load_skus
from reconciler.errors import ApiError
from reconciler.needs import Needs, compute_needs
from reconciler.observe import Obj
from reconciler.outcome import DONE, after_status, refused_workload, requeue_after, retried
from reconciler.plan import (
    ANNOTATION_DESIRED_HASH,
    RECREATE_HOW,
    SURGE_HOW,
    ObservedWorkload,
    WorkloadPlan,
    desired_workload,
    needs_free_gpus,
    plan_workload,
    with_hash,
)
from reconciler.status import Cond
from reconciler.workload import Strategy, rolling_update
from tests.reconciler.goldens import IMAGES, workspace

SELECTED = ("node-a",)
Observe = Callable[[list[Obj]], list[Obj]]
"""Makes the observed objects from what the first plan applied (the server's copies)."""


def served(objs: list[Obj]) -> list[Obj]:
    """The objects as the apiserver hands them back: with a uid, defaults and status."""
    out = []
    for o in copy.deepcopy(objs):
        o["metadata"]["uid"] = f"uid-{o['kind']}"
        o["metadata"]["resourceVersion"] = "7"
        o["spec"]["extraDefault"] = True
        o["status"] = {"observedGeneration": 1}
        out.append(o)
    return out


def nothing(_: list[Obj]) -> list[Obj]:
    return []


def template_edited(objs: list[Obj]) -> list[Obj]:
    out = served(objs)
    out[-1]["spec"]["template"]["spec"]["containers"][0]["image"] = "old:1"
    return out


def service_edited(objs: list[Obj]) -> list[Obj]:
    out = served(objs)
    out[0]["spec"]["selector"] = {"someone": "else"}
    return out


def surging(objs: list[Obj]) -> list[Obj]:
    """An unchanged Deployment that we last applied with a surge."""
    last = copy.deepcopy(objs[-1])
    last["metadata"]["annotations"].pop(ANNOTATION_DESIRED_HASH)
    if not last["metadata"]["annotations"]:
        del last["metadata"]["annotations"]  # as rendered
    last["spec"]["strategy"] = rolling_update("surge")
    return served([*objs[:-1], with_hash(last)])


def with_old_deployment(objs: list[Obj]) -> list[Obj]:
    """A StatefulSet Workspace that once ran as a Deployment (ours: labelled)."""
    old = copy.deepcopy(objs[-1])
    old.update(kind="Deployment", apiVersion="apps/v1")
    return [*served(objs), old]


@dataclass(frozen=True)
class Case:
    example: str
    observe: Observe
    free_gpus: int | None
    applies: tuple[str, ...]
    deletes: tuple[str, ...]
    events: tuple[str, ...]
    strategy: Strategy | None = None
    """The Deployment's strategy in the plan (None: not a Deployment)."""
    asks_free_gpus: bool = False
    how: str = ""


CASES = {
    "new: apply everything and say where": Case(
        "falcon-vllm",
        nothing,
        None,
        ("Service", "Deployment"),
        (),
        ("WorkloadCreated",),
        strategy="recreate",
    ),
    "as applied: nothing to write": Case(
        "falcon-vllm", served, None, (), (), (), strategy="recreate"
    ),
    "someone edited our Service: only it is applied": Case(
        "falcon-vllm", service_edited, None, ("Service",), (), (), strategy="recreate"
    ),
    "template changed, a free GPU: surge": Case(
        "falcon-vllm",
        template_edited,
        1,
        ("Deployment",),
        (),
        ("WorkloadUpdated",),
        strategy="surge",
        asks_free_gpus=True,
        how=SURGE_HOW,
    ),
    "template changed, no free GPU: recreate": Case(
        "falcon-vllm",
        template_edited,
        0,
        ("Deployment",),
        (),
        ("WorkloadUpdated",),
        strategy="recreate",
        asks_free_gpus=True,
        how=RECREATE_HOW,
    ),
    "unchanged template keeps its surge strategy": Case(
        "falcon-vllm", surging, None, (), (), (), strategy="surge"
    ),
    "a CPU Workspace recreates without counting GPUs": Case(
        "qwen-cpu-vllm",
        template_edited,
        None,
        ("Deployment",),
        (),
        ("WorkloadUpdated",),
        strategy="recreate",
        how=RECREATE_HOW,
    ),
    "multi-node: the stale Deployment goes": Case(
        "llama-multinode", with_old_deployment, None, (), ("Deployment",), ()
    ),
    "multi-node template change: the StatefulSet rolls Pod by Pod": Case(
        "llama-multinode",
        template_edited,
        None,
        ("StatefulSet",),
        (),
        ("WorkloadUpdated",),
        how=RECREATE_HOW,
    ),
}


def needs_of(example: str) -> Needs:
    needs = compute_needs(
        workspace(example),
        presets=load_presets(),
        skus=load_skus(),
        config=DEFAULT_CONFIG,
        nodes={},
    )
    assert isinstance(needs, Needs), needs
    return needs


def observed_from(objs: list[Obj]) -> ObservedWorkload:
    named = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    return ObservedWorkload(named=named, owned=objs)


def plan_for(example: str, observe: Observe, free_gpus: int | None) -> tuple[WorkloadPlan, bool]:
    ws, needs = workspace(example), needs_of(example)
    empty = ObservedWorkload(named={})
    first_desired = desired_workload(ws, needs, selected=SELECTED, images=IMAGES, observed=empty)
    first = plan_workload(ws, needs, first_desired, empty, selected=SELECTED)
    observed = observed_from(observe(list(first.apply)))
    desired = desired_workload(ws, needs, selected=SELECTED, images=IMAGES, observed=observed)
    asks = needs_free_gpus(desired, observed, needs)
    return plan_workload(ws, needs, desired, observed, selected=SELECTED, free_gpus=free_gpus), asks


@pytest.mark.parametrize("name", CASES)
def test_the_plan_writes_only_what_changed(name: str) -> None:
    case = CASES[name]
    plan, asks = plan_for(case.example, case.observe, case.free_gpus)
    assert tuple(o["kind"] for o in plan.apply) == case.applies
    assert tuple(o["kind"] for o in plan.delete) == case.deletes
    assert tuple(e.reason for e in plan.events) == case.events
    assert plan.writes == bool(case.applies or case.deletes)
    assert asks == case.asks_free_gpus
    strategy = plan.workload["spec"].get("strategy")
    if case.strategy is None:
        assert strategy is None
    else:
        assert strategy == rolling_update(case.strategy)
    if case.how:
        (event,) = plan.events
        assert event.message.endswith(case.how)
    if plan.apply and plan.apply[-1]["kind"] == plan.workload["kind"]:
        assert plan.apply[-1] is plan.workload


def test_a_created_workload_says_which_nodes() -> None:
    plan, _ = plan_for("falcon-vllm", nothing, None)
    (event,) = plan.events
    name = workspace("falcon-vllm").name
    assert event.message == f"created Deployment {name} and Service {name} on node-a"


def test_the_strategy_alone_changes_nothing_else() -> None:
    surge, _ = plan_for("falcon-vllm", template_edited, 1)
    recreate, _ = plan_for("falcon-vllm", template_edited, 0)

    def without_strategy(obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["spec"].pop("strategy")
        out["metadata"]["annotations"].pop(ANNOTATION_DESIRED_HASH)
        return out

    assert without_strategy(surge.workload) == without_strategy(recreate.workload)


FORBIDDEN = ApiError(403, "Forbidden", "cannot patch deployments")
INVALID = ApiError(422, "Invalid", "spec.template: bad")
OK = Cond(True, "Ready", "")
WAITING = Cond(False, "Waiting", "")


@pytest.mark.parametrize(
    ("resource", "inference", "refusal", "result"),
    [
        (OK, OK, None, DONE),
        (OK, WAITING, None, requeue_after(5.0)),
        (WAITING, WAITING, None, requeue_after(5.0)),
        (OK, WAITING, INVALID, DONE),  # the same spec is refused again: wait for a change
    ],
)
def test_what_the_loop_does_next(
    resource: Cond, inference: Cond, refusal: ApiError | None, result: Any
) -> None:
    assert after_status(resource, inference, refusal=refusal, pending_requeue_s=5.0) == result
    assert result.requeue == (result.requeue_after is not None)


def test_a_refused_workload_is_reported_and_only_rbac_is_retried() -> None:
    cond = refused_workload(OK, INVALID)
    assert (cond.ok, cond.reason) == (False, "WorkloadRefused")
    assert "inference.template" in cond.message
    assert "RBAC" in refused_workload(OK, FORBIDDEN).message
    assert refused_workload(WAITING, None) is WAITING
    assert retried(FORBIDDEN)
    assert not retried(INVALID)
