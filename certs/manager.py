"""The certificate manager: keeps the webhook's CA and serving certificate in a Secret, rotates
them before expiry and writes the CA bundle into the webhook configurations.

Use from the webhook process::

    settings = CertSettings(namespace="kaito-system", service_name="kaito-webhook",
                            mutating_webhook_configurations=("kaito-workspace-mutating",),
                            validating_webhook_configurations=("kaito-workspace-validating",))
    kube = CertKube(Kube(load_kubeconfig(path), field_manager=FIELD_MANAGER))  # reconciler.kube
    manager = CertManager(settings, kube)
    bundle = await manager.ensure()                # Secret created or reused, caBundle injected
    tls = ReloadableServerContext(bundle)          # certs.tls; pass tls.context to web.TCPSite
    task = asyncio.create_task(manager.run(tls.reload))   # re-checks every check_interval
    ...
    stop.set() / task.cancel()

Every step is decided by the pure :func:`certs.plan.plan`; this module only reads the Secret,
writes what :func:`certs.plan.carry_out` computed, and loops until the plan says ``keep``. Two
replicas (or a restart) converge on one Secret: creation is a POST (the loser of the race gets
``AlreadyExists``, re-reads and uses the winner's material) and updates carry the
``resourceVersion`` they were planned from (the loser of a race re-reads and re-plans).

A replica notices another replica's rotation at its next check, so the settings require the renew
windows to be at least two check intervals long.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from certs.errors import CertConflictError, CertError, CertMaterialError
from certs.kube import MUTATING, VALIDATING, CertKube, WebhookKind
from certs.plan import (
    SECRET_TYPE,
    Action,
    ActionKind,
    CertBundle,
    Material,
    Wanted,
    carry_out,
    plan,
)
from certs.settings import CertSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
OnChange = Callable[[CertBundle], Awaitable[object] | object]

MAX_STEPS = 8
"""Plan/write rounds per check before giving up (a fresh Secret needs 1, a CA rotation 2)."""

MAX_INJECT_TRIES = 4


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EnsureResult:
    """What one check did: the bundle in force, the actions written, the configurations patched."""

    bundle: CertBundle
    actions: tuple[Action, ...]
    injected: tuple[str, ...]


class CertManager:
    """Keeps one certificate Secret and the caBundle of the named webhook configurations right."""

    def __init__(self, settings: CertSettings, kube: CertKube, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.wanted = Wanted.from_settings(settings)
        self._current: CertBundle | None = None

    @property
    def secret_ref(self) -> str:
        return f"{self.settings.namespace}/{self.settings.secret_name}"

    @property
    def current(self) -> CertBundle | None:
        """The bundle the last successful check returned."""
        return self._current

    # -- one check -------------------------------------------------------------------------------

    async def ensure(self) -> CertBundle:
        """Create, reuse or rotate the Secret, inject the caBundle; return the bundle to serve."""
        return (await self.reconcile()).bundle

    async def reconcile(self) -> EnsureResult:
        """:meth:`ensure`, also reporting which actions were written and what was patched."""
        bundle, actions = await self.ensure_secret()
        injected = await self.inject(bundle.ca_bundle_pem)
        self._current = bundle
        return EnsureResult(bundle=bundle, actions=actions, injected=injected)

    async def ensure_secret(self) -> tuple[CertBundle, tuple[Action, ...]]:
        """Plan and write until the Secret needs nothing more; no caBundle injection."""
        ns, name = self.settings.namespace, self.settings.secret_name
        actions: list[Action] = []
        conflicts = 0
        for _ in range(MAX_STEPS):
            stored = await self.kube.read_secret(ns, name)
            if stored is not None and stored.type != SECRET_TYPE:
                raise CertMaterialError(
                    f"Secret {self.secret_ref} has type {stored.type!r}, not {SECRET_TYPE!r}, and "
                    f"a Secret's type cannot change: delete it (kubectl delete secret -n {ns} "
                    f"{name}) so it is recreated, or set secret_name to another name"
                )
            data = stored.data if stored is not None else None
            now = self.clock()
            action = plan(now, data, self.wanted)
            if action.kind is ActionKind.KEEP:
                assert data is not None
                return Material.from_secret_data(data).bundle, tuple(actions)
            material = carry_out(action, now, data, self.wanted)
            try:
                if stored is None:
                    await self.kube.create_secret(ns, name, material.to_secret_data())
                else:
                    await self.kube.apply_secret(
                        ns, name, material.to_secret_data(), stored.resource_version
                    )
            except CertConflictError as exc:
                conflicts += 1
                log.info("Secret %s changed under us (%s); re-reading", self.secret_ref, exc)
                continue
            log.info("Secret %s: %s", self.secret_ref, action)
            actions.append(action)
        raise CertConflictError(
            f"Secret {self.secret_ref} did not settle after {MAX_STEPS} rounds "
            f"({len(actions)} writes: {[a.kind.value for a in actions]}, {conflicts} conflicts); "
            "another writer keeps changing it — make sure every replica runs the same certs "
            "settings (names, IPs, validity, key algorithm)"
        )

    async def inject(self, ca_bundle_pem: bytes) -> tuple[str, ...]:
        """Write ``ca_bundle_pem`` as the caBundle of every webhook in the named configurations
        where it differs; return ``"Kind/name"`` of those patched."""
        targets: list[tuple[WebhookKind, str]] = [
            *((MUTATING, n) for n in self.settings.mutating_webhook_configurations),
            *((VALIDATING, n) for n in self.settings.validating_webhook_configurations),
        ]
        patched: list[str] = []
        for kind, name in targets:
            for attempt in range(1, MAX_INJECT_TRIES + 1):
                state = await self.kube.read_webhook_config(kind, name)
                if all(v == ca_bundle_pem for v in state.ca_bundles.values()):
                    break
                try:
                    await self.kube.apply_ca_bundle(state, ca_bundle_pem)
                except CertConflictError:
                    if attempt == MAX_INJECT_TRIES:
                        raise
                    continue
                log.info(
                    "caBundle written into %s %s (%d webhooks)", kind, name, len(state.ca_bundles)
                )
                patched.append(f"{kind}/{name}")
                break
        return tuple(patched)

    # -- the loop --------------------------------------------------------------------------------

    async def run(
        self, on_change: OnChange | None = None, *, stop: asyncio.Event | None = None
    ) -> None:
        """Re-check every ``check_interval`` until ``stop`` is set (or the task is cancelled).

        ``on_change(bundle)`` (sync or async, e.g. ``ReloadableServerContext.reload``) is called
        whenever the bundle differs from the one last handed out: by :meth:`ensure` before
        ``run`` started, or by ``on_change`` itself. Without a prior :meth:`ensure`, the first
        check happens at once and its bundle is handed to ``on_change``. Errors are logged and
        retried with exponential backoff (1 s doubling, capped at ``check_interval``); an
        ``on_change`` that raises is called again at the next check.
        """
        stop = stop if stop is not None else asyncio.Event()
        interval = self.settings.check_interval
        delivered = self._current
        delay = interval if delivered is not None else timedelta(0)
        failures = 0
        while not await _wait(stop, delay):
            try:
                bundle = (await self.reconcile()).bundle
            except CertError as exc:
                failures += 1
                delay = _backoff(failures, interval)
                log.warning(
                    "certificate check for Secret %s failed (%d in a row), retrying in %s: %s",
                    self.secret_ref,
                    failures,
                    delay,
                    exc,
                )
                continue
            except Exception:
                failures += 1
                delay = _backoff(failures, interval)
                log.exception(
                    "certificate check for Secret %s crashed, retrying in %s",
                    self.secret_ref,
                    delay,
                )
                continue
            failures, delay = 0, interval
            if bundle == delivered:
                continue
            if on_change is not None:
                try:
                    result = on_change(bundle)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("on_change failed for serial %x; will retry", bundle.serial)
                    failures += 1
                    delay = _backoff(failures, interval)
                    continue
            log.info(
                "serving certificate serial %x handed out (expires %s)",
                bundle.serial,
                bundle.not_after.isoformat(),
            )
            delivered = bundle


def _backoff(failures: int, cap: timedelta) -> timedelta:
    return min(cap, timedelta(seconds=2 ** min(failures - 1, 20)))


async def _wait(stop: asyncio.Event, delay: timedelta) -> bool:
    """Sleep ``delay`` or until ``stop`` is set; return whether it was set."""
    if stop.is_set():
        return True
    if delay <= timedelta(0):
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay.total_seconds())
    except TimeoutError:
        return False
    return True
