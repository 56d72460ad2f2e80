"""Settings of the certificate manager: one frozen, validated dataclass.

Every field has a description and bounds (``dataclasses.fields(CertSettings)[i].metadata``); the
constructor validates them and the relations between them and raises
:class:`~certs.errors.CertConfigError` naming the field, the bad value and the fix.

The webhook process embeds this object in its own settings. To read it from the environment (or
any string mapping), call :meth:`CertSettings.from_env` — nothing is read at import time::

    settings = CertSettings.from_env(os.environ)          # KAITO_CERTS_NAMESPACE=..., ...
    settings = CertSettings(namespace="kaito-system", service_name="kaito-webhook",
                            mutating_webhook_configurations=("kaito-workspace",))

Environment values: durations as ``90d``, ``12h``, ``1h30m``, ``45s`` or plain seconds; renew-before
as a fraction (``0.33``) or a duration (``720h``); lists comma-separated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, cast

from api import settings_spec
from api.settings_spec import Spec
from certs.errors import CertConfigError
from certs.pki import (
    KEY_ALGORITHMS,
    KeyAlgorithm,
    RenewBefore,
    parse_ip,
    renew_window,
    webhook_dns_names,
)

ENV_PREFIX = "KAITO_CERTS_"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def _render(value: object) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ",".join(cast(tuple[str, ...], value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parse_duration(text: str) -> timedelta:
    """``"90d"``, ``"1h30m"``, ``"45s"``, ``"0"`` or plain seconds (``"300"``) → timedelta."""
    text = text.strip().lower()
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise CertConfigError(
            f"{text!r} is not a duration; write e.g. 90d, 12h, 1h30m, 45s or a number of seconds"
        )
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration` for whole seconds (``timedelta(hours=36)`` →
    ``"1d12h"``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_renew_before(text: str) -> RenewBefore:
    """A fraction in (0, 1) such as ``"0.33"``, or a duration such as ``"720h"``."""
    text = text.strip()
    try:
        fraction = float(text)
    except ValueError:
        return parse_duration(text)
    if not 0.0 < fraction < 1.0:
        raise CertConfigError(
            f"{text!r} is not a fraction in (0, 1); write e.g. 0.33, or a duration such as 720h"
        )
    return fraction


def _label(value: Any) -> str | None:
    if isinstance(value, str) and _DNS1123_LABEL.match(value):
        return None
    return "not a DNS-1123 label"


def _subdomain(value: Any) -> str | None:
    if isinstance(value, str) and _DNS1123_SUBDOMAIN.match(value):
        return None
    return "not a DNS-1123 subdomain"


def _subdomains(values: Any) -> str | None:
    for value in values:
        if not isinstance(value, str) or not _DNS1123_SUBDOMAIN.match(value.lower()):
            return f"entry {value!r} is not a DNS-1123 subdomain"
    return None


def _ips(values: Any) -> str | None:
    for value in values:
        try:
            parse_ip(value)
        except CertConfigError:
            return f"entry {value!r} is not an IPv4 or IPv6 address"
    return None


_LABEL_FIX = "use lower-case letters, digits and '-', at most 63 characters"
_SUBDOMAIN_FIX = "use lower-case letters, digits, '-' and '.'"
_IP_FIX = "write addresses like 127.0.0.1 or ::1, comma-separated"


def _meta(description: str, **bounds: Any) -> dict[str, Any]:
    """The field's ``api.settings_spec.Spec``: durations parse as ``90d``/``1h30m``/seconds."""
    kind = bounds.pop("kind", None)
    spec = Spec(
        help=description,
        flag=False,
        low=bounds.pop("min", None),
        high=bounds.pop("max", None),
        parse={"duration": parse_duration, "renew": parse_renew_before}.get(kind or ""),
        show=_render if kind else None,
        **bounds,
    )
    return {"spec": spec}


@dataclass(frozen=True)
class CertSettings:
    """Where the certificates live, what they cover, and when they are renewed."""

    namespace: str = field(
        default="kaito-system",
        metadata=_meta(
            "Namespace of the webhook Service and of the Secret (DNS-1123 label).",
            check=_label,
            fix=_LABEL_FIX,
        ),
    )
    service_name: str = field(
        default="kaito-webhook",
        metadata=_meta(
            "Name of the webhook Service; the serving certificate covers <svc>, <svc>.<ns>, "
            "<svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local (DNS-1123 label).",
            check=_label,
            fix=_LABEL_FIX,
        ),
    )
    secret_name: str = field(
        default="kaito-webhook-certs",
        metadata=_meta(
            "Secret (type kubernetes.io/tls, plus ca.crt and ca.key) that keeps the CA and the "
            "serving certificate so restarts and replicas reuse them (DNS-1123 subdomain).",
            check=_subdomain,
            fix=_SUBDOMAIN_FIX,
        ),
    )
    extra_dns_names: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "More DNS names for the serving certificate.",
            max_items=50,
            check=_subdomains,
            fix=_SUBDOMAIN_FIX,
        ),
    )
    ip_addresses: tuple[str, ...] = field(
        default=("127.0.0.1",),
        metadata=_meta(
            "IP addresses for the serving certificate (127.0.0.1 lets the apiserver call a "
            "webhook registered by URL on the loopback).",
            max_items=50,
            check=_ips,
            fix=_IP_FIX,
        ),
    )
    mutating_webhook_configurations: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "MutatingWebhookConfigurations whose every webhook gets the CA bundle as caBundle.",
            max_items=20,
            check=_subdomains,
            fix=_SUBDOMAIN_FIX,
        ),
    )
    validating_webhook_configurations: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "ValidatingWebhookConfigurations whose every webhook gets the CA bundle as caBundle.",
            max_items=20,
            check=_subdomains,
            fix=_SUBDOMAIN_FIX,
        ),
    )
    key_algorithm: KeyAlgorithm = field(
        default="ecdsa-p256",
        metadata=_meta(
            "Key algorithm of new keys: ecdsa-p256 (default) or rsa-2048. Changing it re-issues "
            "the serving certificate; restart the server afterwards to drop the old key type.",
            choices=KEY_ALGORITHMS,
        ),
    )
    serving_validity: timedelta = field(
        default=timedelta(days=90),
        metadata=_meta(
            "Lifetime of a serving certificate (never past its CA's expiry).",
            kind="duration",
            min=timedelta(hours=1),
            max=timedelta(days=730),
        ),
    )
    serving_renew_before: RenewBefore = field(
        default=1 / 3,
        metadata=_meta(
            "Renew the serving certificate this long before it expires: a fraction of its "
            "lifetime in (0, 1) or a duration shorter than serving_validity.",
            kind="renew",
        ),
    )
    ca_validity: timedelta = field(
        default=timedelta(days=1826),
        metadata=_meta(
            "Lifetime of a CA certificate.",
            kind="duration",
            min=timedelta(hours=2),
            max=timedelta(days=7305),
        ),
    )
    ca_renew_before: RenewBefore = field(
        default=1 / 3,
        metadata=_meta(
            "Renew the CA this long before it expires (fraction of its lifetime or a duration). "
            "The old CA stays in the CA bundle until it expires.",
            kind="renew",
        ),
    )
    ca_overlap: timedelta = field(
        default=timedelta(minutes=10),
        metadata=_meta(
            "How long a new CA sits in the caBundle before the serving certificate is signed by "
            "it, so every apiserver trusts the new CA before it sees a certificate from it.",
            kind="duration",
            min=timedelta(seconds=1),
            max=timedelta(days=7),
        ),
    )
    check_interval: timedelta = field(
        default=timedelta(minutes=5),
        metadata=_meta(
            "How often run() re-reads the Secret, rotates what is due and re-checks the caBundle.",
            kind="duration",
            min=timedelta(seconds=1),
            max=timedelta(days=1),
        ),
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # accept lists, store tuples
                object.__setattr__(self, f.name, tuple(value))
            spec = settings_spec.spec_of(f)
            if spec.parse is parse_duration and not isinstance(value, timedelta):
                raise CertConfigError(
                    f"{f.name}={value!r} must be a duration (timedelta), e.g. {f.default!r}"
                )
        problems = settings_spec.problems(self, ENV_PREFIX)
        if problems:
            raise CertConfigError("; ".join(problems))
        if self.key_algorithm not in KEY_ALGORITHMS:
            raise CertConfigError(
                f"key_algorithm={self.key_algorithm!r} is not supported; use one of "
                f"{', '.join(KEY_ALGORITHMS)}"
            )
        self._check_relations()

    def _check_relations(self) -> None:
        serving_window = self._window("serving_renew_before", self.serving_validity)
        ca_window = self._window("ca_renew_before", self.ca_validity)
        if self.serving_validity > self.ca_validity:
            raise CertConfigError(
                f"serving_validity={self.serving_validity} exceeds ca_validity="
                f"{self.ca_validity}; make the CA live longer than its serving certificates"
            )
        if serving_window < 2 * self.check_interval:
            raise CertConfigError(
                f"serving_renew_before gives a renew window of {serving_window}, shorter than two "
                f"check intervals (check_interval={self.check_interval}); every replica must see "
                "the renewed certificate before the old one expires: renew earlier or check "
                "more often"
            )
        if ca_window < self.ca_overlap + 2 * self.check_interval:
            raise CertConfigError(
                f"ca_renew_before gives a renew window of {ca_window}, shorter than ca_overlap "
                f"({self.ca_overlap}) plus two check intervals ({self.check_interval} each); "
                "renew the CA earlier or shorten ca_overlap"
            )

    def _window(self, name: str, validity: timedelta) -> timedelta:
        value = getattr(self, name)
        try:
            window = renew_window(value, validity)
        except CertConfigError as exc:
            raise CertConfigError(f"{name}: {exc}") from None
        if window >= validity:
            raise CertConfigError(
                f"{name}={value} is not shorter than the lifetime ({validity}); the certificate "
                "would be renewed as soon as it is issued"
            )
        return window

    # -- derived -------------------------------------------------------------------------------

    @property
    def dns_names(self) -> tuple[str, ...]:
        """All DNS names of the serving certificate: the Service's names, then the extra ones."""
        names = list(webhook_dns_names(self.service_name, self.namespace))
        names += [n for n in self.extra_dns_names if n not in names]
        return tuple(names)

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str = ENV_PREFIX) -> CertSettings:
        """Build settings from ``PREFIX + FIELD_NAME.upper()`` entries of ``env``; absent ones
        keep their defaults. Raises :class:`CertConfigError` naming the variable."""
        values, problems = settings_spec.from_env(cls, env, prefix)
        if problems:
            raise CertConfigError("; ".join(problems))
        try:
            return cls(**values)
        except CertConfigError as exc:
            raise CertConfigError(f"from environment ({prefix}*): {exc}") from None

    @classmethod
    def describe(cls) -> dict[str, dict[str, str]]:
        """Each field's environment variable, default, description and bounds (for docs)."""
        out: dict[str, dict[str, str]] = {}
        for where, default, bounds, meaning, name in settings_spec.rows(cls, ENV_PREFIX):
            out[name] = {
                "env": where.strip("`"),
                "default": default,
                "description": meaning,
                "bounds": bounds,
            }
        return out
