"""Pure rotation decisions: what to do with the certificate Secret at a given moment.

:func:`plan` looks at the Secret's decoded data (or ``None`` when there is no Secret) and
returns one :class:`Action`; :func:`carry_out` computes the new :class:`Material` for it. The
manager writes that material, reads the Secret back and plans again until the answer is
``keep``. Both functions take ``now``; neither does I/O (``carry_out`` draws random keys and
serial numbers).

The Secret (type ``kubernetes.io/tls``) holds four keys, all PEM:

=========== ===================================================================================
``tls.crt`` the serving certificate (leaf only)
``tls.key`` its private key (PKCS#8)
``ca.crt``  the CA bundle: the current CA first, then older CAs that have not expired yet
``ca.key``  the current CA's private key (older CAs' keys are not kept)
=========== ===================================================================================

Actions, in the order they are considered:

``issue``
    No Secret, or the CA half is unusable (missing, malformed, not a CA, key mismatch, expired or
    not yet valid): a fresh CA and serving certificate.
``renew-ca``
    The current CA is inside its renew window: a new CA goes first in the bundle, the old one stays
    (overlap). The serving certificate is kept — re-issued from the *old* CA if it would otherwise
    need renewal before ``ca_overlap`` has passed — so the apiserver never meets a certificate from
    a CA it has not been told about yet.
``prune-ca``
    An older CA in the bundle has expired: it is dropped.
``renew-serving``
    The serving certificate is missing, malformed, does not match its key, does not verify against
    the bundle, has other SANs than wanted, has another key algorithm than wanted, is inside its
    renew window, or was signed by an older CA while the current CA has been in the bundle for at
    least ``ca_overlap``. The new one is signed by the current CA.
``keep``
    Nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509

from certs.errors import CertConfigError, CertMaterialError
from certs.pki import (
    Issued,
    KeyAlgorithm,
    RenewBefore,
    SigningKey,
    cert_to_pem,
    certs_to_pem,
    is_ca,
    is_signed_by,
    issued_at,
    key_algorithm_of,
    key_matches,
    key_to_pem,
    make_ca,
    make_serving_cert,
    needs_rotation,
    parse_cert,
    parse_certs,
    parse_private_key,
    renew_at,
    require_aware,
)
from certs.settings import CertSettings

TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
CA_KEY = "ca.key"
SECRET_KEYS = (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY)
SECRET_TYPE = "kubernetes.io/tls"


class ActionKind(StrEnum):
    KEEP = "keep"
    ISSUE = "issue"
    RENEW_CA = "renew-ca"
    PRUNE_CA = "prune-ca"
    RENEW_SERVING = "renew-serving"


@dataclass(frozen=True)
class Action:
    """What to do, and why (the reason is logged and shown in errors)."""

    kind: ActionKind
    reason: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.reason}"


@dataclass(frozen=True)
class Wanted:
    """What the certificates must look like, and the rotation policy."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    serving_validity: timedelta
    serving_renew_before: RenewBefore
    ca_validity: timedelta
    ca_renew_before: RenewBefore
    ca_overlap: timedelta
    key_algorithm: KeyAlgorithm = "ecdsa-p256"

    @classmethod
    def from_settings(cls, settings: CertSettings) -> Wanted:
        return cls(
            dns_names=settings.dns_names,
            ip_addresses=settings.ip_addresses,
            serving_validity=settings.serving_validity,
            serving_renew_before=settings.serving_renew_before,
            ca_validity=settings.ca_validity,
            ca_renew_before=settings.ca_renew_before,
            ca_overlap=settings.ca_overlap,
            key_algorithm=settings.key_algorithm,
        )

    @property
    def server_name(self) -> str:
        """The name clients use to check the serving certificate (first DNS name, else IP)."""
        if self.dns_names:
            return self.dns_names[0]
        if self.ip_addresses:
            return self.ip_addresses[0]
        raise CertConfigError("no DNS name and no IP address wanted; set the service name")


@dataclass(frozen=True)
class CertBundle:
    """What a TLS server needs, as PEM: the serving certificate, its key, and the CA bundle that
    clients (the apiserver, via ``caBundle``) trust. Equal bundles mean nothing to reload."""

    cert_pem: bytes
    key_pem: bytes
    ca_bundle_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return parse_cert(self.cert_pem, "serving certificate")

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    @property
    def cas(self) -> list[x509.Certificate]:
        return parse_certs(self.ca_bundle_pem, "CA bundle")


@dataclass(frozen=True)
class Material:
    """Parsed Secret content: the CA bundle (current first), the CA key, the serving pair."""

    cas: tuple[x509.Certificate, ...]
    ca_key: SigningKey
    serving: x509.Certificate
    serving_key: SigningKey

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> Material:
        """Parse all four keys; raise :class:`CertMaterialError` naming the first bad one."""
        cas, ca_key = _parse_ca_half(data)
        serving, serving_key = _parse_serving_half(data)
        return cls(cas=cas, ca_key=ca_key, serving=serving, serving_key=serving_key)

    def to_secret_data(self) -> dict[str, bytes]:
        return {
            TLS_CRT: cert_to_pem(self.serving),
            TLS_KEY: key_to_pem(self.serving_key),
            CA_CRT: certs_to_pem(self.cas),
            CA_KEY: key_to_pem(self.ca_key),
        }

    @property
    def bundle(self) -> CertBundle:
        return CertBundle(
            cert_pem=cert_to_pem(self.serving),
            key_pem=key_to_pem(self.serving_key),
            ca_bundle_pem=certs_to_pem(self.cas),
        )


def _require(data: Mapping[str, bytes], key: str) -> bytes:
    value = data.get(key)
    if not value:
        raise CertMaterialError(f"Secret key {key!r} is missing or empty")
    return value


def _parse_ca_half(data: Mapping[str, bytes]) -> tuple[tuple[x509.Certificate, ...], SigningKey]:
    cas = tuple(parse_certs(_require(data, CA_CRT), f"Secret key {CA_CRT!r}"))
    ca_key = parse_private_key(_require(data, CA_KEY), f"Secret key {CA_KEY!r}")
    if not is_ca(cas[0]):
        raise CertMaterialError(f"the first certificate in {CA_CRT!r} is not a CA (CA:true)")
    if not key_matches(cas[0], ca_key):
        raise CertMaterialError(f"{CA_KEY!r} is not the key of the first certificate in {CA_CRT!r}")
    return cas, ca_key


def _parse_serving_half(data: Mapping[str, bytes]) -> tuple[x509.Certificate, SigningKey]:
    serving = parse_cert(_require(data, TLS_CRT), f"Secret key {TLS_CRT!r}")
    serving_key = parse_private_key(_require(data, TLS_KEY), f"Secret key {TLS_KEY!r}")
    if not key_matches(serving, serving_key):
        raise CertMaterialError(f"{TLS_KEY!r} is not the key of the certificate in {TLS_CRT!r}")
    return serving, serving_key


def _serving_problem(
    now: datetime,
    serving: x509.Certificate,
    cas: tuple[x509.Certificate, ...],
    wanted: Wanted,
) -> str | None:
    algorithm = key_algorithm_of(serving)
    if algorithm != wanted.key_algorithm:
        return f"key algorithm is {algorithm}, wanted {wanted.key_algorithm}"
    return needs_rotation(
        serving,
        now,
        wanted.serving_renew_before,
        wanted_dns=wanted.dns_names,
        wanted_ips=wanted.ip_addresses,
        cas=cas,
    )


def plan(now: datetime, secret_data: Mapping[str, bytes] | None, wanted: Wanted) -> Action:
    """Decide the next step for the Secret's decoded ``data`` (``None``: no Secret) at ``now``."""
    require_aware(now)
    if secret_data is None:
        return Action(ActionKind.ISSUE, "the Secret does not exist yet")
    try:
        cas, _ca_key = _parse_ca_half(secret_data)
    except CertMaterialError as exc:
        return Action(ActionKind.ISSUE, f"the CA is unusable: {exc}")
    action = _ca_action(now, cas, wanted)
    if action is None:
        action = _serving_action(now, secret_data, cas, wanted)
    return action or Action(ActionKind.KEEP, "the CA and the serving certificate are fine")


def _ca_action(now: datetime, cas: tuple[x509.Certificate, ...], wanted: Wanted) -> Action | None:
    """Issue, renew or prune the CA(s), or None when they are fine."""
    current = cas[0]
    if now < current.not_valid_before_utc:
        return Action(
            ActionKind.ISSUE,
            f"the CA is not valid before {current.not_valid_before_utc.isoformat()}",
        )
    if now >= current.not_valid_after_utc:
        return Action(
            ActionKind.ISSUE, f"the CA expired at {current.not_valid_after_utc.isoformat()}"
        )
    ca_due = renew_at(current, wanted.ca_renew_before)
    if now >= ca_due:
        return Action(
            ActionKind.RENEW_CA,
            f"the CA expires at {current.not_valid_after_utc.isoformat()}, renewal due since "
            f"{ca_due.isoformat()}",
        )
    expired = [ca for ca in cas[1:] if now >= ca.not_valid_after_utc]
    if expired:
        return Action(
            ActionKind.PRUNE_CA,
            f"{len(expired)} older CA(s) expired (first at "
            f"{expired[0].not_valid_after_utc.isoformat()})",
        )
    return None


def _serving_action(
    now: datetime,
    secret_data: Mapping[str, bytes],
    cas: tuple[x509.Certificate, ...],
    wanted: Wanted,
) -> Action | None:
    """Renew the serving certificate, or None when it is fine (with a usable CA)."""
    try:
        serving, _serving_key = _parse_serving_half(secret_data)
    except CertMaterialError as exc:
        return Action(ActionKind.RENEW_SERVING, f"the serving certificate is unusable: {exc}")
    problem = _serving_problem(now, serving, cas, wanted)
    if problem is not None:
        return Action(ActionKind.RENEW_SERVING, f"the serving certificate is {problem}")
    current = cas[0]
    if not is_signed_by(serving, current):
        since = issued_at(current)
        if now >= since + wanted.ca_overlap:
            return Action(
                ActionKind.RENEW_SERVING,
                f"the serving certificate is signed by an older CA and the current CA has been "
                f"in the bundle since {since.isoformat()} (overlap {wanted.ca_overlap})",
            )
    return None


def carry_out(
    action: Action,
    now: datetime,
    secret_data: Mapping[str, bytes] | None,
    wanted: Wanted,
) -> Material:
    """The material after ``action`` (from :func:`plan` on the same ``secret_data``) at ``now``.

    Raises :class:`CertConfigError` for ``keep`` (nothing to compute) and
    :class:`CertMaterialError` when ``secret_data`` does not support the action.
    """
    require_aware(now)
    kind = action.kind
    if kind is ActionKind.KEEP:
        raise CertConfigError("carry_out() got a 'keep' action; there is nothing to compute")
    if kind is ActionKind.ISSUE or secret_data is None:
        ca = make_ca(now, wanted.ca_validity, key_algorithm=wanted.key_algorithm)
        serving = _issue_serving(now, ca, wanted)
        return Material(
            cas=(ca.cert,), ca_key=ca.key, serving=serving.cert, serving_key=serving.key
        )

    cas, ca_key = _parse_ca_half(secret_data)
    live = tuple(c for c in cas if now < c.not_valid_after_utc)
    try:
        serving_pair: tuple[x509.Certificate, SigningKey] | None = _parse_serving_half(secret_data)
    except CertMaterialError:
        serving_pair = None

    if kind is ActionKind.RENEW_CA:
        old = Issued(cert=cas[0], key=ca_key)
        new = make_ca(now, wanted.ca_validity, key_algorithm=wanted.key_algorithm)
        # Keep the serving certificate through the overlap if it can last that long; otherwise
        # re-issue it from the old CA, which every client already trusts.
        later = now + wanted.ca_overlap
        if serving_pair is None or _serving_problem(later, serving_pair[0], live, wanted):
            reissued = _issue_serving(now, old, wanted)
            serving_pair = (reissued.cert, reissued.key)
        return Material(
            cas=(new.cert, *live),
            ca_key=new.key,
            serving=serving_pair[0],
            serving_key=serving_pair[1],
        )

    if serving_pair is None and kind is not ActionKind.RENEW_SERVING:
        raise CertMaterialError(f"cannot {kind.value}: the serving certificate is unusable")

    if kind is ActionKind.PRUNE_CA:
        assert serving_pair is not None
        return Material(
            cas=live, ca_key=ca_key, serving=serving_pair[0], serving_key=serving_pair[1]
        )

    # RENEW_SERVING
    serving = _issue_serving(now, Issued(cert=cas[0], key=ca_key), wanted)
    return Material(cas=live, ca_key=ca_key, serving=serving.cert, serving_key=serving.key)


def _issue_serving(now: datetime, ca: Issued, wanted: Wanted) -> Issued:
    return make_serving_cert(
        now,
        ca,
        dns_names=wanted.dns_names,
        ip_addresses=wanted.ip_addresses,
        validity=wanted.serving_validity,
        key_algorithm=wanted.key_algorithm,
    )
