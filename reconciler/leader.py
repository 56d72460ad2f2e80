"""Leader election on a ``coordination.k8s.io/v1`` Lease.

``decide`` is the pure rule (as in client-go): a replica holding the Lease renews it; another
replica takes it over only once it has seen the same record unchanged for the lease duration
(measured on its own monotonic clock, so clock skew between machines does not matter), or when
the Lease has no holder. Writes use the Lease's resourceVersion: of two replicas racing, one
wins and the other gets a conflict.

``LeaderElector`` is the I/O shell. ``leading`` is true only while the last successful renewal
is younger than the renew deadline, so a leader cut off from the apiserver stops writing before
another replica can take over (renew deadline < lease duration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from reconciler.errors import ApiError
from reconciler.resources import LEASES

if TYPE_CHECKING:
    from reconciler.kube import Kube

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of ``Lease.spec`` that election uses."""

    holder: str = ""
    duration_s: int = 15
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_s=int(spec.get("leaseDurationSeconds") or 15),
            acquire_time=spec.get("acquireTime") or "",
            renew_time=spec.get("renewTime") or "",
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_s,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def micro_time(now: datetime) -> str:
    """A ``metav1.MicroTime``: RFC 3339 with microseconds, in UTC."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Decision:
    action: Literal["create", "renew", "acquire", "wait"]
    record: LeaseRecord | None
    """The record to write (None for ``wait``)."""
    reason: str


def decide(
    current: LeaseRecord | None,
    *,
    identity: str,
    duration_s: int,
    now: datetime,
    observed_for_s: float,
) -> Decision:
    """What this replica should do with the Lease.

    ``current`` is the Lease's record (None when the Lease does not exist); ``observed_for_s``
    is how long this replica has seen that exact record unchanged."""
    stamp = micro_time(now)
    if current is None:
        return Decision(
            "create",
            LeaseRecord(identity, duration_s, stamp, stamp, 0),
            "no Lease yet: create it and lead",
        )
    if current.holder == identity:
        return Decision(
            "renew",
            replace(current, renew_time=stamp, duration_s=duration_s),
            "we hold the Lease: renew it",
        )
    if not current.holder or observed_for_s >= current.duration_s:
        why = (
            "the Lease has no holder"
            if not current.holder
            else f"{current.holder} has not renewed for {observed_for_s:.1f}s "
            f"(lease duration {current.duration_s}s)"
        )
        return Decision(
            "acquire",
            LeaseRecord(identity, duration_s, stamp, stamp, current.transitions + 1),
            f"{why}: take it over",
        )
    return Decision("wait", None, f"{current.holder} holds the Lease")


class LeaderElector:
    """Keeps trying to lead; calls ``on_started``/``on_stopped`` on transitions."""

    def __init__(
        self,
        kube: Kube,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration_s: float,
        renew_deadline_s: float,
        retry_period_s: float,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration_s = max(1, round(lease_duration_s))
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self._last_renew: float | None = None
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._was_leading = False
        self.transitions = 0

    @property
    def leading(self) -> bool:
        """True while we hold the Lease and renewed it within the renew deadline."""
        return (
            self._last_renew is not None and self.clock() - self._last_renew < self.renew_deadline_s
        )

    def _set_leading(self, value: bool) -> None:
        if value and not self._was_leading:
            self._was_leading = True
            self.transitions += 1
            log.info("became leader (lease %s/%s as %s)", self.namespace, self.name, self.identity)
            self.on_started()
        elif not value and self._was_leading:
            self._was_leading = False
            self._last_renew = None
            log.warning("stopped leading (lease %s/%s)", self.namespace, self.name)
            self.on_stopped()

    async def try_once(self) -> Decision:
        """Read the Lease, decide, write; returns the decision (``wait`` after a lost race)."""
        lease = await self.kube.get(LEASES, self.name, self.namespace)
        current = None if lease is None else LeaseRecord.from_lease(lease)
        now = self.clock()
        if current != self._observed:
            self._observed, self._observed_at = current, now
        decision = decide(
            current,
            identity=self.identity,
            duration_s=self.duration_s,
            now=datetime.now(UTC),
            observed_for_s=now - self._observed_at,
        )
        if decision.record is None:
            return decision
        body: dict[str, Any] = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": decision.record.to_spec(),
        }
        started = self.clock()
        try:
            if lease is None:
                await self.kube.create(body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                await self.kube.replace(body)
        except ApiError as exc:
            if exc.status == 409:
                return Decision("wait", None, f"lost the race for the Lease: {exc.reason}")
            raise
        # The renewal counts from when we sent it, not from when the answer came back.
        self._last_renew = started
        self._observed, self._observed_at = decision.record, self.clock()
        return decision

    async def run(self) -> None:
        """Loop until cancelled; on cancel, release the Lease if we hold it."""
        try:
            while True:
                try:
                    decision = await self.try_once()
                    if decision.action == "wait" and self._was_leading:
                        self._last_renew = None
                except (ApiError, OSError, TimeoutError) as exc:
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                except Exception as exc:  # aiohttp errors and the like: keep trying
                    log.warning("lease %s/%s: %r", self.namespace, self.name, exc)
                self._set_leading(self.leading)
                await asyncio.sleep(self._next_delay())
        finally:
            await self._release_despite_cancellation()

    async def _release_despite_cancellation(self) -> None:
        """Release the Lease even when cancelled again while releasing (a shutdown cancels
        every task, sometimes more than once): the release is bounded by its own timeouts."""
        release = asyncio.ensure_future(self._release())
        while not release.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(release)

    def _next_delay(self) -> float:
        if self._last_renew is None:
            return self.retry_period_s
        # Never sleep past the renew deadline.
        left = self.renew_deadline_s - (self.clock() - self._last_renew)
        return max(0.05, min(self.retry_period_s, left / 2))

    async def _release(self) -> None:
        was = self.leading
        self._set_leading(False)
        if not was:
            return
        with contextlib.suppress(Exception):
            lease = await asyncio.wait_for(
                self.kube.get(LEASES, self.name, self.namespace), timeout=2
            )
            if lease is None or LeaseRecord.from_lease(lease).holder != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update(holderIdentity="", leaseDurationSeconds=1)
            await asyncio.wait_for(self.kube.replace({**lease, "spec": spec}), timeout=2)
            log.info("released lease %s/%s", self.namespace, self.name)
