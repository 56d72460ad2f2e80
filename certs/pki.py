"""Pure X.509 helpers for the webhook's CA and serving certificate (``cryptography`` only, no I/O).

Key algorithm: **ECDSA P-256** by default (fast to generate, small, accepted by Go's TLS stack that
the kube-apiserver uses); **RSA-2048** is available as ``key_algorithm="rsa-2048"``. Signatures use
SHA-256. Key usage of a serving certificate is ``digitalSignature`` plus ``keyEncipherment`` for RSA
keys only: RFC 5480 §3 does not allow ``keyEncipherment`` with an EC public key.

Every function that depends on time takes ``now`` (an aware ``datetime``), so tests move time
without sleeping. Validity starts :data:`BACKDATE` before ``now`` to tolerate clock skew between
the webhook and the apiserver (client-go's certificate helpers do the same); the moment a
certificate was issued is therefore ``not_valid_before_utc + BACKDATE`` (:func:`issued_at`).

Typical use::

    now = datetime.now(timezone.utc)
    ca = make_ca(now, timedelta(days=1825))
    serving = make_serving_cert(
        now, ca, dns_names=webhook_dns_names("kaito-webhook", "kaito-system"),
        ip_addresses=("127.0.0.1",), validity=timedelta(days=90),
    )
    verify_chain(serving.cert, [ca.cert], now, "kaito-webhook.kaito-system.svc")
    reason = needs_rotation(serving.cert, now, 1 / 3, wanted_dns=..., wanted_ips=..., cas=[ca.cert])
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import CertConfigError, CertMaterialError, CertVerificationError

KeyAlgorithm = Literal["ecdsa-p256", "rsa-2048"]
"""Key algorithms this package generates."""

KEY_ALGORITHMS: tuple[str, ...] = get_args(KeyAlgorithm)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Private key types this package can load and sign with."""

RenewBefore = float | timedelta
"""When to renew: a fraction of the lifetime in (0, 1), or a duration before expiry."""

IPLike = ipaddress.IPv4Address | ipaddress.IPv6Address

BACKDATE = timedelta(hours=1)
"""Validity starts this long before issuance, to tolerate clock skew."""

DEFAULT_CA_NAME = "kaito-py webhook CA"
ORGANIZATION = "kaito-py"
_MAX_CN = 64  # RFC 5280 ub-common-name


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: SigningKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)


def require_aware(now: datetime, what: str = "now") -> datetime:
    """Return ``now`` if it is timezone-aware; raise :class:`CertConfigError` otherwise."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise CertConfigError(
            f"{what}={now!r} is a naive datetime; pass an aware one, "
            "e.g. datetime.now(timezone.utc)"
        )
    return now


def new_private_key(algorithm: KeyAlgorithm = "ecdsa-p256") -> SigningKey:
    """Generate a fresh private key of the given algorithm."""
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertConfigError(
        f"key_algorithm={algorithm!r} is not supported; use one of {', '.join(KEY_ALGORITHMS)}"
    )


def key_algorithm_of(key: SigningKey | x509.Certificate) -> str:
    """Name a key's algorithm as :data:`KeyAlgorithm` does (``"ecdsa-p256"``, ``"rsa-2048"``),
    or describe it (``"rsa-4096"``, ``"ecdsa-secp384r1"``) when it is not one we generate."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        if isinstance(public.curve, ec.SECP256R1):
            return "ecdsa-p256"
        return f"ecdsa-{public.curve.name}"
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa-{public.key_size}"
    return type(public).__name__


def webhook_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a Service ``service`` in ``namespace`` answers to, shortest first."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def parse_ip(value: str) -> IPLike:
    """Parse an IPv4 or IPv6 address; raise :class:`CertConfigError` naming the value."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise CertConfigError(
            f"ip address {value!r} is not an IPv4 or IPv6 address; write it like 127.0.0.1 or ::1"
        ) from None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ski(cert_or_key: x509.Certificate | SigningKey) -> x509.SubjectKeyIdentifier:
    if isinstance(cert_or_key, x509.Certificate):
        try:
            return cert_or_key.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.SubjectKeyIdentifier.from_public_key(cert_or_key.public_key())
    return x509.SubjectKeyIdentifier.from_public_key(cert_or_key.public_key())


def _check_validity(validity: timedelta, what: str) -> None:
    if validity <= timedelta(0):
        raise CertConfigError(f"{what}={validity} must be positive, e.g. timedelta(days=90)")


def make_ca(
    now: datetime,
    validity: timedelta,
    *,
    common_name: str = DEFAULT_CA_NAME,
    key: SigningKey | None = None,
    key_algorithm: KeyAlgorithm = "ecdsa-p256",
) -> Issued:
    """A self-signed CA: ``CA:true`` (path length 0), ``keyCertSign`` + ``cRLSign``, SKI and AKI.

    Its common name carries the issue time so successive CAs have distinct subjects. Valid from
    ``now - BACKDATE`` to ``now + validity``.
    """
    require_aware(now)
    _check_validity(validity, "ca validity")
    key = key if key is not None else new_private_key(key_algorithm)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    cn = f"{common_name} {stamp}"[:_MAX_CN]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    ski = _ski(key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert=cert, key=key)


def make_serving_cert(
    now: datetime,
    ca: Issued,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    validity: timedelta,
    key: SigningKey | None = None,
    key_algorithm: KeyAlgorithm = "ecdsa-p256",
) -> Issued:
    """A serving certificate signed by ``ca`` for ``dns_names`` and ``ip_addresses``.

    Extensions: SAN, ``CA:false``, key usage ``digitalSignature`` (+ ``keyEncipherment`` for RSA),
    extended key usage ``serverAuth``, SKI, AKI (the CA's SKI). Valid from ``now - BACKDATE`` to
    ``now + validity``, never past the CA's own expiry.
    """
    require_aware(now)
    _check_validity(validity, "serving validity")
    if not dns_names and not ip_addresses:
        raise CertConfigError(
            "a serving certificate needs at least one DNS name or IP address; "
            "set the service name or ip_addresses"
        )
    ips = [parse_ip(ip) for ip in ip_addresses]
    key = key if key is not None else new_private_key(key_algorithm)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    common_name = next((n for n in dns_names if len(n) <= _MAX_CN), None)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name is not None else []
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
        .add_extension(x509.SubjectAlternativeName(sans), critical=common_name is None)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca.cert)),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert=cert, key=key)


# --- PEM ---------------------------------------------------------------------------------------


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenate certificates as PEM (the format of a ``caBundle`` and of ``ca.crt``)."""
    return b"".join(cert_to_pem(c) for c in certs)


def key_to_pem(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM (what ``tls.key`` of a ``kubernetes.io/tls`` Secret holds)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_certs(pem: bytes, what: str = "certificate PEM") -> list[x509.Certificate]:
    """Parse one or more PEM certificates; raise :class:`CertMaterialError` if there are none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertMaterialError(
            f"{what} does not parse as PEM certificates; "
            "expected one or more '-----BEGIN CERTIFICATE-----' blocks"
        ) from None
    if not certs:
        raise CertMaterialError(f"{what} holds no certificate")
    return certs


def parse_cert(pem: bytes, what: str = "certificate PEM") -> x509.Certificate:
    """Parse exactly one PEM certificate."""
    certs = parse_certs(pem, what)
    if len(certs) != 1:
        raise CertMaterialError(f"{what} holds {len(certs)} certificates; expected exactly one")
    return certs[0]


def parse_private_key(pem: bytes, what: str = "private key PEM") -> SigningKey:
    """Parse an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1); EC or RSA only."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertMaterialError(
            f"{what} does not parse as an unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertMaterialError(
            f"{what} is a {type(key).__name__}; only EC and RSA keys are supported"
        )
    return key


# --- inspection --------------------------------------------------------------------------------


def key_matches(cert: x509.Certificate, key: SigningKey) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    return cert.public_key() == key.public_key()


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries ``CA:true`` and ``keyCertSign``."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca and ku.key_cert_sign


def is_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca``'s key signed ``cert`` (signature and issuer name; no policy checks)."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def sans_of(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[IPLike]]:
    """The DNS names (lower-cased) and IP addresses in ``cert``'s subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))
    ips = frozenset(san.get_values_for_type(x509.IPAddress))
    return dns, ips  # type: ignore[return-value]


def lifetime(cert: x509.Certificate) -> timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def issued_at(cert: x509.Certificate) -> datetime:
    """When a certificate made by this module was issued (``not_valid_before + BACKDATE``)."""
    return cert.not_valid_before_utc + BACKDATE


def renew_window(renew_before: RenewBefore, cert_lifetime: timedelta) -> timedelta:
    """How long before expiry to renew: ``renew_before`` × lifetime for a fraction, else itself."""
    if isinstance(renew_before, timedelta):
        if renew_before <= timedelta(0):
            raise CertConfigError(f"renew_before={renew_before} must be a positive duration")
        return renew_before
    if isinstance(renew_before, bool) or not 0.0 < float(renew_before) < 1.0:
        raise CertConfigError(
            f"renew_before={renew_before!r} must be a fraction of the lifetime in (0, 1), "
            "e.g. 0.33, or a timedelta"
        )
    return cert_lifetime * float(renew_before)


def renew_at(cert: x509.Certificate, renew_before: RenewBefore) -> datetime:
    """The moment from which ``cert`` should be renewed."""
    return cert.not_valid_after_utc - renew_window(renew_before, lifetime(cert))


def verify_chain(
    leaf: x509.Certificate,
    cas: Sequence[x509.Certificate],
    now: datetime,
    server_name: str,
) -> list[x509.Certificate]:
    """Verify ``leaf`` for ``server_name`` (a DNS name or an IP) against the trusted ``cas``.

    Uses ``cryptography``'s own RFC 5280 / CA/B-style verifier (signature, validity at ``now``,
    ``serverAuth``, SAN match, CA constraints). Returns the verified chain, leaf first; raises
    :class:`CertVerificationError` with the verifier's reason.
    """
    require_aware(now)
    if not cas:
        raise CertVerificationError("no CA to verify against: the CA bundle is empty")
    try:
        subject = (
            x509.IPAddress(ipaddress.ip_address(server_name))
            if _is_ip(server_name)
            else x509.DNSName(server_name)
        )
    except ValueError:
        raise CertConfigError(
            f"server name {server_name!r} is neither an IP address nor a valid DNS name"
        ) from None
    verifier = PolicyBuilder().store(Store(list(cas))).time(now).build_server_verifier(subject)
    try:
        return verifier.verify(leaf, [])
    except VerificationError as exc:
        raise CertVerificationError(
            f"serving certificate serial {leaf.serial_number:x} does not verify for "
            f"{server_name!r} against {len(cas)} CA(s) at {now.isoformat()}: {exc}"
        ) from None


def needs_rotation(
    cert: x509.Certificate,
    now: datetime,
    renew_before: RenewBefore,
    *,
    wanted_dns: Iterable[str] | None = None,
    wanted_ips: Iterable[str] | None = None,
    cas: Sequence[x509.Certificate] | None = None,
) -> str | None:
    """Why ``cert`` should be replaced at ``now``, or ``None`` when it is fine.

    Reasons: not yet valid; inside its renew window (``renew_before``: fraction of the lifetime
    or a duration); SANs differ from ``wanted_dns``/``wanted_ips`` (when given, compared as
    sets); not signed by any of ``cas`` or not verifying against them (when given).
    """
    require_aware(now)
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    due = renew_at(cert, renew_before)
    if now >= cert.not_valid_after_utc:
        return f"expired at {cert.not_valid_after_utc.isoformat()}"
    if now >= due:
        return (
            f"expires at {cert.not_valid_after_utc.isoformat()}, renewal due since "
            f"{due.isoformat()}"
        )
    if wanted_dns is not None or wanted_ips is not None:
        have_dns, have_ips = sans_of(cert)
        want_dns = frozenset(n.lower() for n in (wanted_dns or ()))
        want_ips = frozenset(parse_ip(ip) for ip in (wanted_ips or ()))
        if have_dns != want_dns or have_ips != want_ips:
            return (
                f"SANs {sorted(have_dns)} {sorted(map(str, have_ips))} differ from the wanted "
                f"{sorted(want_dns)} {sorted(map(str, want_ips))}"
            )
    if cas is not None:
        if not any(is_signed_by(cert, ca) for ca in cas):
            return "not signed by any CA in the bundle"
        names = sorted(sans_of(cert)[0]) or sorted(map(str, sans_of(cert)[1]))
        if not names:
            return "carries no subjectAltName"
        try:
            verify_chain(cert, cas, now, names[0])
        except CertVerificationError as exc:
            return str(exc)
    return None
