"""The pure rotation decisions (certs.plan) at simulated times, no sleeping, no cluster."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.errors import CertConfigError, CertVerificationError
from certs.pki import (
    cert_to_pem,
    is_signed_by,
    key_to_pem,
    make_ca,
    make_serving_cert,
    verify_chain,
)
from certs.plan import (
    CA_CRT,
    CA_KEY,
    TLS_CRT,
    TLS_KEY,
    Action,
    ActionKind,
    Material,
    Wanted,
    carry_out,
    plan,
)
from certs.settings import CertSettings

T0 = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
KEEP, ISSUE, RENEW_CA, PRUNE_CA, RENEW_SERVING = (
    ActionKind.KEEP,
    ActionKind.ISSUE,
    ActionKind.RENEW_CA,
    ActionKind.PRUNE_CA,
    ActionKind.RENEW_SERVING,
)

# CA: 300 days, renewed 100 days before expiry; serving: 30 days, renewed 10 days before expiry.
WANTED = Wanted.from_settings(
    CertSettings(
        ca_validity=timedelta(days=300),
        ca_renew_before=1 / 3,
        serving_validity=timedelta(days=30),
        serving_renew_before=timedelta(days=10),
        ca_overlap=timedelta(minutes=10),
        check_interval=timedelta(minutes=5),
    )
)


def settle(
    now: datetime, data: dict[str, bytes] | None, wanted: Wanted = WANTED
) -> tuple[dict[str, bytes], list[ActionKind]]:
    """What the manager does in one check: plan and carry out until 'keep'."""
    kinds: list[ActionKind] = []
    for _ in range(8):
        action = plan(now, data, wanted)
        if action.kind is KEEP:
            assert data is not None
            return data, kinds
        kinds.append(action.kind)
        data = carry_out(action, now, data, wanted).to_secret_data()
    raise AssertionError(f"no settling: {kinds}")


def material(data: dict[str, bytes]) -> Material:
    return Material.from_secret_data(data)


def check_serves(
    data: dict[str, bytes], now: datetime, trusted: tuple[x509.Certificate, ...]
) -> None:
    """The serving certificate verifies, for every wanted name, against ``trusted``."""
    m = material(data)
    for name in (*WANTED.dns_names, *WANTED.ip_addresses):
        verify_chain(m.serving, trusted, now, name)


@pytest.fixture(scope="module")
def fresh() -> dict[str, bytes]:
    data, kinds = settle(T0, None)
    assert kinds == [ISSUE]
    return data


def test_no_secret_means_issue_then_keep(fresh: dict[str, bytes]) -> None:
    assert plan(T0, None, WANTED) == Action(ISSUE, "the Secret does not exist yet")
    assert set(fresh) == {TLS_CRT, TLS_KEY, CA_CRT, CA_KEY}
    m = material(fresh)
    assert len(m.cas) == 1
    assert is_signed_by(m.serving, m.cas[0])
    check_serves(fresh, T0, m.cas)
    assert plan(T0, fresh, WANTED).kind is KEEP
    assert plan(T0 + timedelta(days=19, hours=23), fresh, WANTED).kind is KEEP


def test_serving_renewed_inside_its_window_with_the_same_ca(fresh: dict[str, bytes]) -> None:
    later = T0 + timedelta(days=20)
    action = plan(later, fresh, WANTED)
    assert action.kind is RENEW_SERVING
    assert "renewal due" in action.reason
    data, kinds = settle(later, fresh)
    assert kinds == [RENEW_SERVING]
    old, new = material(fresh), material(data)
    assert new.cas == old.cas
    assert new.ca_key.public_key() == old.ca_key.public_key()
    assert new.serving.serial_number != old.serving.serial_number
    assert new.serving_key.public_key() != old.serving_key.public_key()
    assert new.serving.not_valid_after_utc == later + timedelta(days=30)
    check_serves(data, later, old.cas)  # the caBundle the apiserver has is still right


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dns_names": ("other.svc",)}, "SANs"),
        ({"ip_addresses": ("127.0.0.1", "10.0.0.7")}, "SANs"),
        ({"ip_addresses": ()}, "SANs"),
        ({"key_algorithm": "rsa-2048"}, "key algorithm is ecdsa-p256, wanted rsa-2048"),
    ],
)
def test_serving_renewed_when_wanted_changes(
    fresh: dict[str, bytes], change: dict[str, object], reason: str
) -> None:
    wanted = dataclasses.replace(WANTED, **change)  # type: ignore[arg-type]
    action = plan(T0, fresh, wanted)
    assert action.kind is RENEW_SERVING
    assert reason in action.reason
    data, kinds = settle(T0, fresh, wanted)
    assert kinds == [RENEW_SERVING]
    assert plan(T0, data, wanted).kind is KEEP
    assert material(data).cas == material(fresh).cas


@pytest.mark.parametrize(
    ("mutate", "kind", "reason"),
    [
        (lambda d: d.pop(TLS_KEY), RENEW_SERVING, "'tls.key' is missing"),
        (lambda d: d.update({TLS_CRT: b"junk"}), RENEW_SERVING, "'tls.crt' does not parse"),
        (lambda d: d.pop(CA_CRT), ISSUE, "'ca.crt' is missing"),
        (lambda d: d.update({CA_KEY: d[TLS_KEY]}), ISSUE, "'ca.key' is not the key"),
        (lambda d: d.update({CA_CRT: d[TLS_CRT]}), ISSUE, "is not a CA"),
    ],
)
def test_broken_secret_data(
    fresh: dict[str, bytes], mutate: object, kind: ActionKind, reason: str
) -> None:
    data = dict(fresh)
    mutate(data)  # type: ignore[operator]
    action = plan(T0, data, WANTED)
    assert action.kind is kind
    assert reason in action.reason
    fixed, kinds = settle(T0, data)
    assert kinds == [kind]
    check_serves(fixed, T0, material(fixed).cas)


def test_serving_cert_from_a_foreign_ca_is_replaced(fresh: dict[str, bytes]) -> None:
    stranger = make_ca(T0, timedelta(days=300), common_name="stranger")
    foreign = make_serving_cert(
        T0,
        stranger,
        dns_names=WANTED.dns_names,
        ip_addresses=WANTED.ip_addresses,
        validity=timedelta(days=30),
    )
    data = {**fresh, TLS_CRT: foreign.cert_pem, TLS_KEY: foreign.key_pem}
    action = plan(T0, data, WANTED)
    assert action.kind is RENEW_SERVING
    assert "not signed by any CA in the bundle" in action.reason
    fixed, _ = settle(T0, data)
    check_serves(fixed, T0, material(fresh).cas)


def test_expired_ca_is_reissued(fresh: dict[str, bytes]) -> None:
    late = T0 + timedelta(days=301)
    action = plan(late, fresh, WANTED)
    assert action.kind is ISSUE
    assert "the CA expired" in action.reason


def test_ca_rotation_keeps_the_old_ca_and_the_serving_cert_through_the_overlap(
    fresh: dict[str, bytes],
) -> None:
    # Keep the serving certificate fresh until the CA's renew window opens (day 200).
    day199 = T0 + timedelta(days=199)
    data, _ = settle(day199 - timedelta(days=15), fresh)
    data, _ = settle(day199, data)
    assert plan(day199, data, WANTED).kind is KEEP
    before = material(data)

    day200 = T0 + timedelta(days=200)
    action = plan(day200, data, WANTED)
    assert action.kind is RENEW_CA
    data, kinds = settle(day200, data)
    assert kinds == [RENEW_CA]  # nothing else in the same check
    after = material(data)
    assert len(after.cas) == 2
    assert after.cas[1] == before.cas[0]  # the old CA stays, second
    assert after.cas[0] != before.cas[0]
    assert after.serving == before.serving  # still signed by the old CA
    check_serves(data, day200, before.cas)  # apiservers with the old caBundle are fine
    check_serves(data, day200, after.cas)

    # During the overlap nothing changes ...
    assert plan(day200 + timedelta(minutes=9), data, WANTED).kind is KEEP
    # ... then the serving certificate moves to the new CA.
    moved_at = day200 + timedelta(minutes=10)
    action = plan(moved_at, data, WANTED)
    assert action.kind is RENEW_SERVING
    assert "older CA" in action.reason
    data, kinds = settle(moved_at, data)
    assert kinds == [RENEW_SERVING]
    moved = material(data)
    assert is_signed_by(moved.serving, after.cas[0])
    assert moved.cas == after.cas  # the old CA is still in the bundle
    check_serves(data, moved_at, after.cas)
    with pytest.raises(CertVerificationError):
        check_serves(data, moved_at, before.cas)  # which is why the overlap exists

    # The old CA is dropped once it has expired (day 300).
    assert plan(T0 + timedelta(days=299), data, WANTED).kind in {KEEP, RENEW_SERVING}
    data, _ = settle(T0 + timedelta(days=215), data)
    data, _ = settle(T0 + timedelta(days=235), data)
    data, _ = settle(T0 + timedelta(days=255), data)
    data, _ = settle(T0 + timedelta(days=275), data)
    data, _ = settle(T0 + timedelta(days=295), data)
    day301 = T0 + timedelta(days=301)
    action = plan(day301, data, WANTED)
    assert action.kind is PRUNE_CA
    data, kinds = settle(day301, data)
    assert kinds == [PRUNE_CA]
    assert material(data).cas == (after.cas[0],)


def test_ca_rotation_reissues_a_serving_cert_that_would_expire_during_the_overlap(
    fresh: dict[str, bytes],
) -> None:
    # A serving certificate that expires 5 minutes after the CA rotation must not be kept.
    ca = material(fresh)
    rotation = T0 + timedelta(days=210)
    from certs.pki import Issued

    short = make_serving_cert(
        rotation - timedelta(days=1),
        Issued(cert=ca.cas[0], key=ca.ca_key),
        dns_names=WANTED.dns_names,
        ip_addresses=WANTED.ip_addresses,
        validity=timedelta(days=1, minutes=5),
    )
    data = {**fresh, TLS_CRT: short.cert_pem, TLS_KEY: short.key_pem}
    assert plan(rotation, data, WANTED).kind is RENEW_CA
    rotated = carry_out(plan(rotation, data, WANTED), rotation, data, WANTED)
    assert rotated.serving != short.cert
    assert is_signed_by(rotated.serving, ca.cas[0])  # from the OLD CA, which clients trust
    check_serves(rotated.to_secret_data(), rotation, ca.cas)


def test_carry_out_refuses_keep(fresh: dict[str, bytes]) -> None:
    with pytest.raises(CertConfigError, match="nothing to compute"):
        carry_out(Action(KEEP, "x"), T0, fresh, WANTED)


def test_material_round_trips_through_secret_data(fresh: dict[str, bytes]) -> None:
    m = material(fresh)
    assert Material.from_secret_data(m.to_secret_data()).to_secret_data() == fresh
    assert m.bundle.cert_pem == cert_to_pem(m.serving)
    assert m.bundle.key_pem == key_to_pem(m.serving_key)
    assert m.bundle.serial == m.serving.serial_number
    assert m.bundle.cas == list(m.cas)


# A compressed lifetime for the simulation: CA 60 days (renewed 20 days before expiry), serving
# 6 days (renewed 2 days before), checks at most a day apart (half the serving renew window).
SIM = Wanted.from_settings(
    CertSettings(
        ca_validity=timedelta(days=60),
        ca_renew_before=timedelta(days=20),
        serving_validity=timedelta(days=6),
        serving_renew_before=timedelta(days=2),
        ca_overlap=timedelta(minutes=10),
        check_interval=timedelta(hours=12),
    )
)


@settings(max_examples=6, deadline=None)
@given(
    gaps=st.lists(st.tuples(st.integers(240, 24 * 60), st.integers(0, 30)), min_size=1, max_size=12)
)
def test_lifetime_simulation_never_breaks_a_client(gaps: list[tuple[int, int]]) -> None:
    """Checks 4 to 24 hours apart, each sometimes followed by a quick re-check 1 to 30 minutes
    later (cycling through ``gaps``), for 130 days (three CA rotations). After every check the
    serving certificate verifies against the caBundle published by the PREVIOUS check (an
    apiserver that has not seen the new caBundle yet) and against the new one."""
    names = (SIM.dns_names[2], SIM.ip_addresses[0])

    def serves(
        serving: x509.Certificate, now: datetime, trusted: tuple[x509.Certificate, ...]
    ) -> None:
        for name in names:
            verify_chain(serving, trusted, now, name)

    now = T0
    data, _ = settle(now, None, SIM)
    published = material(data).cas
    seen: list[ActionKind] = []
    i = 0
    while now < T0 + timedelta(days=130):
        big, small = gaps[i % len(gaps)]
        i += 1
        for minutes in (big, small) if small else (big,):
            now += timedelta(minutes=minutes)
            data, kinds = settle(now, data, SIM)
            seen += kinds
            assert len(kinds) <= 2, kinds
            current = material(data)
            serves(current.serving, now, published)
            serves(current.serving, now, current.cas)
            assert all(now < ca.not_valid_after_utc for ca in current.cas)
            assert len(current.cas) <= 2
            published = current.cas
    assert seen.count(RENEW_CA) >= 2
    assert seen.count(PRUNE_CA) >= 1
    assert ISSUE not in seen
