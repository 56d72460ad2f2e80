"""X.509 material from certs.pki, checked with cryptography's own verifier and by inspection."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import CertConfigError, CertMaterialError, CertVerificationError
from certs.pki import (
    BACKDATE,
    Issued,
    KeyAlgorithm,
    cert_to_pem,
    certs_to_pem,
    is_ca,
    is_signed_by,
    issued_at,
    key_matches,
    make_ca,
    make_serving_cert,
    needs_rotation,
    parse_cert,
    parse_certs,
    parse_private_key,
    renew_at,
    renew_window,
    sans_of,
    verify_chain,
    webhook_dns_names,
)

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
SVC, NS = "kaito-webhook", "kaito-system"
DNS = webhook_dns_names(SVC, NS)
IPS = ("127.0.0.1",)


def _serving(
    ca: Issued,
    *,
    now: datetime = NOW,
    validity: timedelta = timedelta(days=90),
    alg: KeyAlgorithm = "ecdsa-p256",
) -> Issued:
    return make_serving_cert(
        now, ca, dns_names=DNS, ip_addresses=IPS, validity=validity, key_algorithm=alg
    )


def _verifier_for(name: str, cas: list[x509.Certificate], at: datetime) -> object:
    subject: x509.DNSName | x509.IPAddress
    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    return PolicyBuilder().store(Store(cas)).time(at).build_server_verifier(subject)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca(NOW, timedelta(days=365))


@pytest.fixture(scope="module")
def serving(ca: Issued) -> Issued:
    return _serving(ca)


def test_webhook_dns_names_cover_every_service_form() -> None:
    assert DNS == (
        "kaito-webhook",
        "kaito-webhook.kaito-system",
        "kaito-webhook.kaito-system.svc",
        "kaito-webhook.kaito-system.svc.cluster.local",
    )


def test_ca_is_a_self_signed_ca_with_key_identifiers(ca: Issued) -> None:
    cert = ca.cert
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed: raises if not
    assert is_ca(cert)
    assert key_matches(cert, ca.key)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca.key.curve, ec.SECP256R1)


def test_validity_is_timezone_aware_and_backdated(ca: Issued, serving: Issued) -> None:
    for cert in (ca.cert, serving.cert):
        assert cert.not_valid_before_utc.tzinfo is not None
        assert cert.not_valid_before_utc == NOW - BACKDATE
        assert issued_at(cert) == NOW
    assert ca.cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert serving.cert.not_valid_after_utc == NOW + timedelta(days=90)


def test_serving_cert_sans_usages_and_identifiers(ca: Issued, serving: Issued) -> None:
    cert = serving.cert
    dns, ips = sans_of(cert)
    assert dns == frozenset(DNS)
    assert ips == frozenset({ipaddress.ip_address("127.0.0.1")})
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment  # RFC 5480: not with an EC key
    assert not ku.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(serving.key.public_key())
    assert is_signed_by(cert, ca.cert)
    assert key_matches(cert, serving.key)


@pytest.mark.parametrize("name", [*DNS, "127.0.0.1"])
def test_cryptography_verifier_accepts_every_wanted_name(
    ca: Issued, serving: Issued, name: str
) -> None:
    verifier = _verifier_for(name, [ca.cert], NOW)
    chain = verifier.verify(serving.cert, [])  # type: ignore[attr-defined]
    assert chain[0] == serving.cert
    assert chain[-1] == ca.cert
    assert verify_chain(serving.cert, [ca.cert], NOW, name) == chain


@pytest.mark.parametrize(
    "name", ["evil.example.com", "kaito-webhook.other.svc", "127.0.0.2", "::1"]
)
def test_cryptography_verifier_refuses_other_names(ca: Issued, serving: Issued, name: str) -> None:
    with pytest.raises(VerificationError):
        _verifier_for(name, [ca.cert], NOW).verify(serving.cert, [])  # type: ignore[attr-defined]
    with pytest.raises(CertVerificationError, match=name.replace(".", r"\.")):
        verify_chain(serving.cert, [ca.cert], NOW, name)


def test_verifier_refuses_another_ca_and_times_outside_validity(
    ca: Issued, serving: Issued
) -> None:
    stranger = make_ca(NOW + timedelta(seconds=1), timedelta(days=365))
    with pytest.raises(CertVerificationError):
        verify_chain(serving.cert, [stranger.cert], NOW, DNS[2])
    with pytest.raises(CertVerificationError, match="not valid"):
        verify_chain(serving.cert, [ca.cert], NOW + timedelta(days=91), DNS[2])
    with pytest.raises(CertVerificationError, match="not valid"):
        verify_chain(serving.cert, [ca.cert], NOW - BACKDATE - timedelta(seconds=1), DNS[2])
    # The bundle may hold several CAs; the right one is found among them.
    assert verify_chain(serving.cert, [stranger.cert, ca.cert], NOW, DNS[2])[-1] == ca.cert


def test_rsa_serving_cert_adds_key_encipherment_and_verifies(ca: Issued) -> None:
    issued = _serving(ca, alg="rsa-2048")
    assert isinstance(issued.key, rsa.RSAPrivateKey)
    assert issued.key.key_size == 2048
    ku = issued.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment
    _verifier_for(DNS[3], [ca.cert], NOW).verify(issued.cert, [])  # type: ignore[attr-defined]


def test_serving_validity_is_clamped_to_the_ca(ca: Issued) -> None:
    issued = _serving(ca, validity=timedelta(days=400))
    assert issued.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_long_name_goes_to_the_san_only_and_the_san_becomes_critical(ca: Issued) -> None:
    long_name = ("a" * 40) + "." + ("b" * 40) + ".example"
    issued = make_serving_cert(NOW, ca, dns_names=[long_name], validity=timedelta(days=1))
    assert len(issued.cert.subject) == 0
    assert issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    verify_chain(issued.cert, [ca.cert], NOW, long_name)


def test_pem_round_trip(ca: Issued, serving: Issued) -> None:
    other = make_ca(NOW, timedelta(days=30), common_name="other")
    assert parse_cert(serving.cert_pem) == serving.cert
    assert parse_certs(certs_to_pem([ca.cert, other.cert])) == [ca.cert, other.cert]
    key = parse_private_key(serving.key_pem)
    assert key_matches(serving.cert, key)
    assert serving.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"", "'ca.crt' does not parse as PEM certificates"),
        (b"garbage", "'ca.crt' does not parse as PEM certificates"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
    ],
)
def test_parse_certs_errors_name_the_problem(pem: bytes, message: str) -> None:
    with pytest.raises(CertMaterialError, match=message):
        parse_certs(pem, "Secret key 'ca.crt'")


def test_parse_cert_wants_exactly_one(ca: Issued, serving: Issued) -> None:
    with pytest.raises(CertMaterialError, match="holds 2 certificates"):
        parse_cert(certs_to_pem([ca.cert, serving.cert]))


def test_parse_private_key_errors(serving: Issued) -> None:
    with pytest.raises(CertMaterialError, match=r"tls\.key"):
        parse_private_key(cert_to_pem(serving.cert), "tls.key")


def test_naive_datetimes_are_refused(ca: Issued) -> None:
    naive = datetime(2030, 1, 1)
    with pytest.raises(CertConfigError, match="naive"):
        make_ca(naive, timedelta(days=1))
    with pytest.raises(CertConfigError, match="naive"):
        needs_rotation(ca.cert, naive, 0.5)


def test_bad_arguments_are_refused(ca: Issued) -> None:
    with pytest.raises(CertConfigError, match="at least one DNS name"):
        make_serving_cert(NOW, ca, dns_names=[], validity=timedelta(days=1))
    with pytest.raises(CertConfigError, match="not an IPv4 or IPv6"):
        make_serving_cert(NOW, ca, dns_names=["a"], ip_addresses=["1.2.3"], validity=timedelta(1))
    with pytest.raises(CertConfigError, match="must be positive"):
        make_ca(NOW, timedelta(0))
    with pytest.raises(CertConfigError, match=r"fraction of the lifetime in \(0, 1\)"):
        renew_window(1.5, timedelta(days=1))


def test_renew_window_fraction_and_duration(serving: Issued) -> None:
    lifetime = serving.cert.not_valid_after_utc - serving.cert.not_valid_before_utc
    assert renew_window(0.25, lifetime) == lifetime / 4
    assert renew_window(timedelta(days=7), lifetime) == timedelta(days=7)
    assert renew_at(serving.cert, timedelta(days=7)) == NOW + timedelta(days=83)


def test_needs_rotation_at_simulated_times(ca: Issued, serving: Issued) -> None:
    kwargs = {"wanted_dns": DNS, "wanted_ips": IPS, "cas": [ca.cert]}
    due = renew_at(serving.cert, 1 / 3)
    assert needs_rotation(serving.cert, NOW, 1 / 3, **kwargs) is None  # type: ignore[arg-type]
    just_before = due - timedelta(seconds=1)
    assert needs_rotation(serving.cert, just_before, 1 / 3, **kwargs) is None  # type: ignore[arg-type]
    reason = needs_rotation(serving.cert, due, 1 / 3, **kwargs)  # type: ignore[arg-type]
    assert reason is not None
    assert "renewal due" in reason
    # A duration works the same way.
    assert needs_rotation(serving.cert, NOW + timedelta(days=82), timedelta(days=7)) is None
    assert needs_rotation(serving.cert, NOW + timedelta(days=84), timedelta(days=7))
    expired = needs_rotation(serving.cert, NOW + timedelta(days=91), 0.1)
    assert expired is not None
    assert expired.startswith("expired")
    early = needs_rotation(serving.cert, NOW - timedelta(hours=2), 0.1)
    assert early is not None
    assert early.startswith("not valid before")


def test_needs_rotation_when_sans_differ(serving: Issued) -> None:
    assert needs_rotation(serving.cert, NOW, 0.3, wanted_dns=DNS, wanted_ips=IPS) is None
    # case-insensitive DNS comparison, order does not matter
    upper = [n.upper() for n in reversed(DNS)]
    assert needs_rotation(serving.cert, NOW, 0.3, wanted_dns=upper, wanted_ips=IPS) is None
    reason = needs_rotation(serving.cert, NOW, 0.3, wanted_dns=DNS[:2], wanted_ips=IPS)
    assert reason is not None
    assert "SANs" in reason
    assert needs_rotation(serving.cert, NOW, 0.3, wanted_dns=DNS, wanted_ips=("::1",))


def test_needs_rotation_when_not_signed_by_the_bundle(serving: Issued) -> None:
    stranger = make_ca(NOW + timedelta(minutes=1), timedelta(days=365))
    reason = needs_rotation(serving.cert, NOW, 0.3, cas=[stranger.cert])
    assert reason == "not signed by any CA in the bundle"
