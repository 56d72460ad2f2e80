"""The outcome of one reconcile (pure): the conditions it reports and what the loop does next.

``Result`` is controller-runtime's ``reconcile.Result``: done, or requeue after a delay (a wait
is a requeue, never a sleep). Errors are raised, and the loop retries them with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.errors import ApiError
from reconciler.status import REASON_WORKLOAD_REFUSED, Cond

REFUSED = (400, 403, 422)
"""API answers that retrying the same request will not change: reported in status."""
TYPED_PATCH_FAILURES = ("failed to create typed patch object", "not declared in schema")
"""What the apiserver says (with HTTP 500) when an apply body does not fit the object's
schema, e.g. an unknown field in a template Workspace's Pod template."""
REASON_NODECLAIM_REFUSED = "NodeClaimRefused"


@dataclass(frozen=True)
class Result:
    """What the loop does with the key after a reconcile that did not fail."""

    requeue_after: float | None = None
    """Reconcile again after this many seconds (a wait for something that sends no event, or
    the fallback to one); None: done until the next change."""

    @property
    def requeue(self) -> bool:
        return self.requeue_after is not None


DONE = Result()


def requeue_after(seconds: float) -> Result:
    return Result(requeue_after=seconds)


def refused(exc: ApiError) -> bool:
    """The apiserver refused the request itself: the same request will be refused again."""
    if exc.status in REFUSED:
        return True
    return exc.status == 500 and any(words in exc.message for words in TYPED_PATCH_FAILURES)


def retried(refusal: ApiError) -> bool:
    """A refused workload is retried (with backoff) when it can heal without a change to the
    Workspace: RBAC (403). Anything else waits for a change (or the resync)."""
    return refusal.status == 403


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


def refused_workload(inference: Cond, refusal: ApiError | None) -> Cond:
    """The InferenceReady condition, or the refusal of the workload when there was one."""
    if refusal is None:
        return inference
    return Cond(
        False,
        REASON_WORKLOAD_REFUSED,
        f"the apiserver refused the workload: {refusal}; {refusal_hint(refusal)}",
    )


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


def after_status(
    resource: Cond, inference: Cond, *, refusal: ApiError | None, pending_requeue_s: float
) -> Result:
    """Done when serving, or when the apiserver refuses the same spec again until it changes;
    otherwise look again after ``pending_requeue_s`` (Pods and nodes also wake us)."""
    if refusal is not None or (resource.ok and inference.ok):
        return DONE
    return requeue_after(pending_requeue_s)
