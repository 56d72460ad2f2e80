"""CertManager and CertKube against the real kube-apiserver of tests/cluster.

Each test gets a fresh namespace; webhook configurations (cluster-scoped) carry the namespace in
their names and are deleted afterwards. Time moves through the manager's clock, never by sleeping,
except in the rotation-under-load test where the apiserver's own TLS checks need real time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from cryptography import x509
from kubernetes import client as k8s

from certs.errors import CertMaterialError, CertNotFoundError, CertPermissionError
from certs.kube import FIELD_MANAGER, MUTATING, VALIDATING, CertKube, StoredSecret
from certs.manager import CertManager
from certs.pki import is_signed_by, parse_certs, verify_chain
from certs.plan import CA_CRT, CA_KEY, TLS_CRT, TLS_KEY, ActionKind, CertBundle, Material
from certs.settings import CertSettings
from certs.tls import ReloadableServerContext
from reconciler.kube import Kube, load_kubeconfig
from tests.cluster.harness import ControlPlane
from tests.support.kubeconfigs import user_kubeconfig

T = TypeVar("T")

pytestmark = pytest.mark.timeout(300)

T0 = datetime.now(UTC).replace(microsecond=0)


class Clock:
    """A settable clock: ``base`` plus ``offset`` (which tests move), or real time plus offset."""

    def __init__(self, base: datetime | None = None) -> None:
        self.base = base
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return (self.base or datetime.now(UTC)) + self.offset


def _settings(namespace: str, **kw: Any) -> CertSettings:
    kw.setdefault("mutating_webhook_configurations", ())
    kw.setdefault("validating_webhook_configurations", ())
    return CertSettings(namespace=namespace, service_name="hook", secret_name="hook-certs", **kw)


class Kubes:
    """Independent clients, as separate replicas would have: ``kubes()`` makes one, and
    ``kubes.run(scenario)`` runs a scenario in a new event loop, then closes the clients made for
    it in that loop."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.made: list[CertKube] = []

    def __call__(self, cls: type[CertKube] = CertKube, **kw: Any) -> CertKube:
        kube = cls(Kube(load_kubeconfig(self.kubeconfig), field_manager="unused"), **kw)
        self.made.append(kube)
        return kube

    def run(self, scenario: Coroutine[Any, Any, T]) -> T:
        async def main() -> T:
            try:
                return await scenario
            finally:
                for kube in self.made:
                    await kube.close()
                self.made.clear()

        return asyncio.run(main())


@pytest.fixture
def kube_factory(control_plane: ControlPlane) -> Kubes:
    return Kubes(control_plane.kubeconfig)


def _webhook_config(kind: str, name: str, namespace: str, url: str, failure: str) -> dict[str, Any]:
    def entry(i: int) -> dict[str, Any]:
        return {
            "name": f"w{i}.certs.kaito.sh",
            "clientConfig": {"url": url},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "objectSelector": {"matchLabels": {"certs-test": "yes"}},
            "failurePolicy": failure,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }

    webhooks = [entry(0)] if failure == "Fail" else [entry(0), entry(1)]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": webhooks,
    }


@pytest.fixture
def webhook_configs(
    control_plane: ControlPlane, namespace: str
) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: create a Mutating- and a ValidatingWebhookConfiguration; returns their names."""
    made: list[tuple[str, str]] = []

    def make(url: str = "https://127.0.0.1:1/never", failure: str = "Ignore") -> tuple[str, str]:
        names = (f"certs-{namespace}-m", f"certs-{namespace}-v")
        for kind, name in zip((MUTATING, VALIDATING), names, strict=True):
            body = _webhook_config(kind, name, namespace, url, failure)
            control_plane.kubectl("create", "-f", "-", input=json.dumps(body))
            made.append((kind.lower(), name))
        return names

    yield make
    for resource, name in made:
        control_plane.kubectl("delete", resource, name, "--wait=false", check=False)


def _ca_bundles(cp: ControlPlane, resource: str, name: str) -> list[bytes]:
    obj = cp.kubectl_json("get", resource, name)
    return [base64.b64decode(w["clientConfig"].get("caBundle", "")) for w in obj["webhooks"]]


def _secret(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = cp.kubectl_json(
        "get", "secret", "hook-certs", "-n", namespace, "--show-managed-fields"
    )
    return result


def _verify(bundle: CertBundle, namespace: str, now: datetime) -> None:
    for name in (f"hook.{namespace}.svc", "127.0.0.1"):
        verify_chain(bundle.cert, bundle.cas, now, name)


def test_secret_is_created_once_and_reused_after_a_restart(
    control_plane: ControlPlane, namespace: str, kube_factory: Kubes
) -> None:
    settings = _settings(namespace)

    async def scenario() -> None:
        first = await CertManager(settings, kube_factory()).reconcile()
        assert [a.kind for a in first.actions] == [ActionKind.ISSUE]
        _verify(first.bundle, namespace, datetime.now(UTC))

        secret = _secret(control_plane, namespace)
        assert secret["type"] == "kubernetes.io/tls"
        assert set(secret["data"]) == {TLS_CRT, TLS_KEY, CA_CRT, CA_KEY}
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kaito-py"
        managers = {m["manager"] for m in secret["metadata"]["managedFields"]}
        assert managers == {FIELD_MANAGER}
        version = secret["metadata"]["resourceVersion"]

        # A restarted process (new manager, new client) reuses the material as it is.
        again = await CertManager(settings, kube_factory()).reconcile()
        assert again.actions == ()
        assert again.bundle == first.bundle
        assert _secret(control_plane, namespace)["metadata"]["resourceVersion"] == version

    kube_factory.run(scenario())


class RacingKube(CertKube):
    """A real client that, before creating the Secret, waits until the other replica is also about
    to create it: both have read 'not found' and planned 'issue', so the race is certain."""

    def __init__(self, kube: Kube, barrier: asyncio.Barrier) -> None:
        super().__init__(kube)
        self.barrier = barrier

    async def create_secret(self, namespace: str, name: str, data: Any) -> StoredSecret:
        await self.barrier.wait()
        return await super().create_secret(namespace, name, data)


def test_two_managers_racing_create_one_secret(
    control_plane: ControlPlane,
    namespace: str,
    kube_factory: Kubes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(namespace)

    async def scenario() -> None:
        barrier = asyncio.Barrier(2)
        kubes = [kube_factory(RacingKube, barrier=barrier) for _ in range(2)]
        results = await asyncio.gather(*(CertManager(settings, kube).reconcile() for kube in kubes))
        a, b = results
        assert a.bundle == b.bundle  # the loser uses the winner's material
        assert sorted(len(r.actions) for r in results) == [0, 1]
        stored = _secret(control_plane, namespace)
        winner = Material.from_secret_data(
            {k: base64.b64decode(v) for k, v in stored["data"].items()}
        )
        assert winner.bundle == a.bundle

    with caplog.at_level(logging.INFO, logger="certs.manager"):
        kube_factory.run(scenario())
    assert sum("changed under us" in r.getMessage() for r in caplog.records) == 1


def test_ca_bundle_is_injected_into_every_webhook_only_when_it_changed(
    control_plane: ControlPlane,
    namespace: str,
    kube_factory: Kubes,
    webhook_configs: Callable[..., tuple[str, str]],
) -> None:
    mutating, validating = webhook_configs()
    settings = _settings(
        namespace,
        mutating_webhook_configurations=(mutating,),
        validating_webhook_configurations=(validating,),
    )

    async def scenario() -> None:
        manager = CertManager(settings, kube_factory())
        result = await manager.reconcile()
        assert result.injected == (f"{MUTATING}/{mutating}", f"{VALIDATING}/{validating}")
        for resource, name in (
            ("mutatingwebhookconfiguration", mutating),
            ("validatingwebhookconfiguration", validating),
        ):
            assert _ca_bundles(control_plane, resource, name) == [result.bundle.ca_bundle_pem] * 2
            obj = control_plane.kubectl_json("get", resource, name, "--show-managed-fields")
            assert {w["clientConfig"]["url"] for w in obj["webhooks"]} == {
                "https://127.0.0.1:1/never"
            }
            assert {w["failurePolicy"] for w in obj["webhooks"]} == {"Ignore"}
            assert FIELD_MANAGER in {m["manager"] for m in obj["metadata"]["managedFields"]}
        version = control_plane.kubectl_json("get", "validatingwebhookconfiguration", validating)[
            "metadata"
        ]["resourceVersion"]

        # Nothing changed: nothing is written.
        assert (await manager.reconcile()).injected == ()
        after = control_plane.kubectl_json("get", "validatingwebhookconfiguration", validating)
        assert after["metadata"]["resourceVersion"] == version

        # Someone blanks one webhook's caBundle: only that configuration is patched back.
        control_plane.kubectl(
            "patch",
            "mutatingwebhookconfiguration",
            mutating,
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/webhooks/1/clientConfig/caBundle"}]),
        )
        assert (await manager.reconcile()).injected == (f"{MUTATING}/{mutating}",)
        assert (
            _ca_bundles(control_plane, "mutatingwebhookconfiguration", mutating)
            == [result.bundle.ca_bundle_pem] * 2
        )

    kube_factory.run(scenario())


def test_a_secret_of_another_type_is_named_with_the_fix(
    control_plane: ControlPlane, namespace: str, kube_factory: Kubes
) -> None:
    control_plane.kubectl("create", "secret", "generic", "hook-certs", "-n", namespace)
    with pytest.raises(CertMaterialError, match=r"has type 'Opaque'.*kubectl delete secret -n"):
        kube_factory.run(CertManager(_settings(namespace), kube_factory()).ensure())


def test_missing_webhook_configuration_is_named_with_the_fix(
    namespace: str, kube_factory: Kubes
) -> None:
    settings = _settings(namespace, validating_webhook_configurations=("no-such-config",))
    with pytest.raises(
        CertNotFoundError,
        match=r"ValidatingWebhookConfiguration no-such-config.*"
        r"apply the webhook configuration first",
    ):
        kube_factory.run(CertManager(settings, kube_factory()).ensure())


def test_missing_rbac_verb_is_named_with_the_fix(
    control_plane: ControlPlane, namespace: str, kube_factory: Kubes, tmp_path: Path
) -> None:
    """A ServiceAccount that may get but not create Secrets (its own token in a kubeconfig):
    the error names the verb."""
    control_plane.kubectl("create", "serviceaccount", "hook", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "read-secrets", "--verb=get", "--resource=secrets", "-n", namespace
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "read-secrets",
        "--role=read-secrets",
        f"--serviceaccount={namespace}:hook",
        "-n",
        namespace,
    )
    token = control_plane.kubectl("create", "token", "hook", "-n", namespace).stdout.strip()
    kube_factory.kubeconfig = user_kubeconfig(control_plane, tmp_path / "kc", {"token": token})
    with pytest.raises(CertPermissionError) as info:
        kube_factory.run(CertManager(_settings(namespace), kube_factory()).ensure())
    message = str(info.value)
    assert f"forbidden to create Secret {namespace}/hook-certs" in message
    assert "grant the webhook's ServiceAccount the RBAC verb 'create' on 'secrets'" in message
    assert info.value.status == 403


def test_rotation_updates_the_secret_and_the_ca_bundle(
    control_plane: ControlPlane,
    namespace: str,
    kube_factory: Kubes,
    webhook_configs: Callable[..., tuple[str, str]],
) -> None:
    mutating, validating = webhook_configs()
    settings = _settings(
        namespace,
        mutating_webhook_configurations=(mutating,),
        validating_webhook_configurations=(validating,),
        serving_validity=timedelta(days=30),
        serving_renew_before=timedelta(days=10),
        ca_validity=timedelta(days=300),
        ca_renew_before=timedelta(days=100),
        ca_overlap=timedelta(minutes=10),
    )
    clock = Clock(T0)
    every = (f"{MUTATING}/{mutating}", f"{VALIDATING}/{validating}")

    def published() -> list[x509.Certificate]:
        bundles = {
            *_ca_bundles(control_plane, "mutatingwebhookconfiguration", mutating),
            *_ca_bundles(control_plane, "validatingwebhookconfiguration", validating),
        }
        assert len(bundles) == 1
        return parse_certs(bundles.pop())

    async def step(days: float, kinds: list[ActionKind], injected: tuple[str, ...]) -> CertBundle:
        clock.offset = timedelta(days=days)
        result = await manager.reconcile()
        assert [a.kind for a in result.actions] == kinds
        assert result.injected == injected
        stored = await manager.kube.read_secret(namespace, "hook-certs")
        assert stored is not None
        assert Material.from_secret_data(stored.data).bundle == result.bundle
        assert parse_certs(result.bundle.ca_bundle_pem) == published()
        _verify(result.bundle, namespace, clock())
        return result.bundle

    manager = CertManager(settings, kube_factory(), clock=clock)

    async def scenario() -> None:
        first = await step(0, [ActionKind.ISSUE], every)
        assert (await step(19, [], ())) == first
        renewed = await step(21, [ActionKind.RENEW_SERVING], ())  # same CA: no caBundle change
        assert renewed.serial != first.serial
        assert renewed.ca_bundle_pem == first.ca_bundle_pem

        await step(190, [ActionKind.RENEW_SERVING], ())
        overlap = await step(200, [ActionKind.RENEW_CA], every)
        (old_ca,) = first.cas
        new_ca, kept_old = overlap.cas
        assert kept_old == old_ca
        assert is_signed_by(overlap.cert, old_ca)  # not yet moved to the new CA
        moved = await step(200 + 11 / (24 * 60), [ActionKind.RENEW_SERVING], ())
        assert is_signed_by(moved.cert, new_ca)
        assert moved.cas == [new_ca, old_ca]

        for day in (221, 241, 261, 282):
            await step(day, [ActionKind.RENEW_SERVING], ())
        pruned = await step(301, [ActionKind.PRUNE_CA], every)
        assert pruned.cas == [new_ca]

    kube_factory.run(scenario())


def test_run_loop_hands_out_rotations_and_stops(namespace: str, kube_factory: Kubes) -> None:
    settings = _settings(namespace, check_interval=timedelta(seconds=1))
    clock = Clock(T0)
    manager = CertManager(settings, kube_factory(), clock=clock)
    seen: list[int] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        changed = asyncio.Event()

        async def on_change(bundle: CertBundle) -> None:
            seen.append(bundle.serial)
            changed.set()

        task = asyncio.create_task(manager.run(on_change, stop=stop))
        await asyncio.wait_for(changed.wait(), 30)  # first check hands out the new bundle
        changed.clear()
        clock.offset = timedelta(days=61)  # into the serving renew window (1/3 of 90 days)
        await asyncio.wait_for(changed.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 10)

    kube_factory.run(scenario())
    assert len(seen) == 2
    assert seen[0] != seen[1]


@dataclass
class LoadStats:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    ok_after: dict[str, int] = field(default_factory=dict)


def test_rotation_while_creates_run_causes_no_failed_admission(
    control_plane: ControlPlane,
    namespace: str,
    kube_factory: Kubes,
    webhook_configs: Callable[..., tuple[str, str]],
) -> None:
    """A real webhook server on 127.0.0.1, registered by URL with failurePolicy Fail, served with
    a ReloadableServerContext fed by CertManager.run. ConfigMap creates run through it while the
    serving certificate is renewed and then the CA is rotated; not one create may fail.

    The clock runs in real time plus an offset, and offsets stay under BACKDATE (1 h) so every
    certificate issued is valid on the apiserver's wall clock too."""
    reviews = {"count": 0}

    async def validate(request: web.Request) -> web.Response:
        review = await request.json()
        reviews["count"] += 1
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            },
            # Close every connection so each admission call is a fresh TLS handshake with the
            # certificate in force at that moment (kept-alive connections would hide a bad one).
            headers={"Connection": "close"},
        )

    settings_kw: dict[str, Any] = {
        "serving_validity": timedelta(hours=1),
        "serving_renew_before": 0.25,  # lifetime 2 h (with backdating): renew 30 min before
        "ca_validity": timedelta(hours=2),
        "ca_renew_before": 0.4,  # lifetime 3 h: renew 72 min before expiry, i.e. at +48 min
        "ca_overlap": timedelta(seconds=4),
        "check_interval": timedelta(seconds=1),
    }
    clock = Clock()
    stats = LoadStats()
    phase = {"name": "initial"}

    def load(stop: threading.Event) -> None:
        api_client = control_plane.api_client()
        core = k8s.CoreV1Api(api_client)
        i = 0
        try:
            while not stop.is_set():
                i += 1
                body = k8s.V1ConfigMap(
                    metadata=k8s.V1ObjectMeta(name=f"cm-{i}", labels={"certs-test": "yes"})
                )
                try:
                    core.create_namespaced_config_map(namespace, body, _request_timeout=30)
                except Exception as exc:  # any failure is what this test looks for
                    stats.failures.append(f"{phase['name']}: {type(exc).__name__}: {exc}")
                else:
                    stats.ok += 1
                    stats.ok_after[phase["name"]] = stats.ok_after.get(phase["name"], 0) + 1
                stop.wait(0.02)
        finally:
            api_client.close()

    async def wait_for(predicate: Callable[[], bool], what: str) -> None:
        for _ in range(600):
            assert stats.failures == []
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    async def scenario() -> None:
        settings = _settings(
            namespace,
            mutating_webhook_configurations=(f"certs-{namespace}-m",),
            validating_webhook_configurations=(f"certs-{namespace}-v",),
            **settings_kw,
        )
        manager = CertManager(settings, kube_factory(), clock=clock)
        bundle, _ = await manager.ensure_secret()
        tls = ReloadableServerContext(bundle)
        app = web.Application()
        app.router.add_post("/validate", validate)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context).start()
            port = runner.addresses[0][1]
            names = webhook_configs(url=f"https://127.0.0.1:{port}/validate", failure="Fail")
            assert names == (
                *settings.mutating_webhook_configurations,
                *settings.validating_webhook_configurations,
            )
            assert (await manager.ensure()) == bundle  # injects the caBundle

            stop_loop = asyncio.Event()
            loop_task = asyncio.create_task(manager.run(tls.reload, stop=stop_loop))
            stop_load = threading.Event()
            load_task = asyncio.create_task(asyncio.to_thread(load, stop_load))
            try:
                await wait_for(lambda: stats.ok_after.get("initial", 0) >= 20, "initial creates")

                first_serial, first_ca = tls.serial, bundle.cas[0]
                phase["name"] = "serving-renewed"
                clock.offset = timedelta(minutes=31)
                await wait_for(lambda: tls.serial != first_serial, "serving renewal")
                assert is_signed_by(tls.bundle.cert, first_ca)
                await wait_for(lambda: stats.ok_after.get(phase["name"], 0) >= 20, "creates")

                phase["name"] = "ca-overlap"
                clock.offset = timedelta(minutes=50)
                await wait_for(lambda: len(tls.bundle.cas) == 2, "CA rotation")
                assert is_signed_by(tls.bundle.cert, first_ca)  # old CA until the overlap ends
                new_ca = tls.bundle.cas[0]
                await wait_for(lambda: stats.ok_after.get(phase["name"], 0) >= 5, "creates")

                await wait_for(lambda: is_signed_by(tls.bundle.cert, new_ca), "move to new CA")
                phase["name"] = "new-ca"
                await wait_for(lambda: stats.ok_after.get(phase["name"], 0) >= 20, "creates")
            finally:
                stop_load.set()
                await load_task
                stop_loop.set()
                await loop_task
        finally:
            await runner.cleanup()

    kube_factory.run(scenario())
    assert stats.failures == []
    assert stats.ok >= 65
    assert reviews["count"] >= 2 * stats.ok  # both webhooks were called for every create
