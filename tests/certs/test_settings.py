"""CertSettings: bounds, relations, environment parsing; every error names field, value and fix."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from certs.errors import CertConfigError
from certs.settings import CertSettings, format_duration, parse_duration, parse_renew_before


def test_defaults_are_valid_and_cover_the_service_names() -> None:
    settings = CertSettings()
    assert settings.dns_names == (
        "kaito-webhook",
        "kaito-webhook.kaito-system",
        "kaito-webhook.kaito-system.svc",
        "kaito-webhook.kaito-system.svc.cluster.local",
    )
    assert settings.ip_addresses == ("127.0.0.1",)
    assert settings.key_algorithm == "ecdsa-p256"


def test_every_field_is_described() -> None:
    described = CertSettings.describe()
    assert set(described) == {f.name for f in fields(CertSettings)}
    for name, entry in described.items():
        assert len(entry["description"]) > 20, name
        assert entry["env"] == "KAITO_CERTS_" + name.upper()
    assert described["check_interval"]["bounds"] == "1s..1d"
    assert described["serving_validity"]["default"] == "90d"


def test_extra_dns_names_are_appended_once() -> None:
    settings = CertSettings(extra_dns_names=("webhook.example.com", "kaito-webhook"))
    assert settings.dns_names[-1] == "webhook.example.com"
    assert settings.dns_names.count("kaito-webhook") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"namespace": "Kaito_System"},
            r"KAITO_CERTS_NAMESPACE='Kaito_System': not a DNS-1123 label; use lower-case",
        ),
        ({"service_name": ""}, "KAITO_CERTS_SERVICE_NAME='': not a DNS-1123 label"),
        ({"secret_name": "a/b"}, "KAITO_CERTS_SECRET_NAME='a/b': not a DNS-1123 subdomain"),
        ({"ip_addresses": ("localhost",)}, "'localhost' is not an IPv4 or IPv6 address"),
        ({"mutating_webhook_configurations": ("Bad Name",)}, "'Bad Name' is not a DNS-1123"),
        (
            {"key_algorithm": "ed25519"},
            "KAITO_CERTS_KEY_ALGORITHM='ed25519': not an allowed value; use one of",
        ),
        (
            {"check_interval": timedelta(0)},
            r"KAITO_CERTS_CHECK_INTERVAL='0s': below the minimum 1s; use a value from 1s to 1d",
        ),
        (
            {"serving_validity": timedelta(minutes=5)},
            "KAITO_CERTS_SERVING_VALIDITY='5m': below the minimum 1h",
        ),
        (
            {"ca_validity": timedelta(days=10000)},
            "KAITO_CERTS_CA_VALIDITY='10000d': above the maximum 7305d",
        ),
        ({"ca_overlap": timedelta(days=8)}, "KAITO_CERTS_CA_OVERLAP='8d': above the maximum 7d"),
        ({"ca_overlap": timedelta(0)}, "KAITO_CERTS_CA_OVERLAP='0s': below the minimum 1s"),
        ({"serving_validity": 90}, "serving_validity=90 must be a duration"),
        ({"serving_renew_before": 1.0}, r"serving_renew_before: .*fraction .* in \(0, 1\)"),
        ({"serving_renew_before": timedelta(days=90)}, "is not shorter than the lifetime"),
        (
            {"serving_validity": timedelta(days=3000)},
            "KAITO_CERTS_SERVING_VALIDITY='3000d': above the maximum 730d",
        ),
        (
            {"serving_validity": timedelta(days=700), "ca_validity": timedelta(days=365)},
            "serving_validity=700 days.* exceeds ca_validity",
        ),
        (
            {"check_interval": timedelta(hours=12), "serving_renew_before": timedelta(hours=20)},
            "shorter than two check intervals",
        ),
        (
            {"ca_renew_before": timedelta(hours=1), "ca_overlap": timedelta(hours=1)},
            "shorter than ca_overlap",
        ),
        ({"extra_dns_names": tuple(f"n{i}" for i in range(51))}, "at most 50"),
    ],
)
def test_invalid_settings_name_the_field_and_the_fix(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(CertConfigError, match=message):
        CertSettings(**kwargs)  # type: ignore[arg-type]


def test_from_env_parses_every_kind_of_field() -> None:
    settings = CertSettings.from_env(
        {
            "KAITO_CERTS_NAMESPACE": "ns1",
            "KAITO_CERTS_SERVICE_NAME": "hook",
            "KAITO_CERTS_IP_ADDRESSES": "127.0.0.1, ::1",
            "KAITO_CERTS_VALIDATING_WEBHOOK_CONFIGURATIONS": "a,b",
            "KAITO_CERTS_SERVING_VALIDITY": "30d",
            "KAITO_CERTS_SERVING_RENEW_BEFORE": "240h",
            "KAITO_CERTS_CA_RENEW_BEFORE": "0.25",
            "KAITO_CERTS_CHECK_INTERVAL": "1m30s",
            "KAITO_CERTS_KEY_ALGORITHM": "rsa-2048",
            "UNRELATED": "x",
        }
    )
    assert settings.namespace == "ns1"
    assert settings.dns_names[2] == "hook.ns1.svc"
    assert settings.ip_addresses == ("127.0.0.1", "::1")
    assert settings.validating_webhook_configurations == ("a", "b")
    assert settings.serving_validity == timedelta(days=30)
    assert settings.serving_renew_before == timedelta(days=10)
    assert settings.ca_renew_before == 0.25
    assert settings.check_interval == timedelta(seconds=90)
    assert settings.key_algorithm == "rsa-2048"


def test_from_env_errors_name_the_variable() -> None:
    with pytest.raises(CertConfigError, match=r"KAITO_CERTS_CHECK_INTERVAL='soon': 'soon' is not"):
        CertSettings.from_env({"KAITO_CERTS_CHECK_INTERVAL": "soon"})
    with pytest.raises(CertConfigError, match=r"KAITO_CERTS_CA_RENEW_BEFORE='1.5'.*fraction"):
        CertSettings.from_env({"KAITO_CERTS_CA_RENEW_BEFORE": "1.5"})
    with pytest.raises(CertConfigError, match=r"KAITO_CERTS_NAMESPACE='X': not a DNS-1123 label"):
        CertSettings.from_env({"KAITO_CERTS_NAMESPACE": "X"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("90d", timedelta(days=90)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("300", timedelta(seconds=300)),
        ("0", timedelta(0)),
        ("1d12h", timedelta(hours=36)),
    ],
)
def test_durations_parse_and_format(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "h", "1x", "1h 30m", "m1", "-"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(CertConfigError, match="not a duration"):
        parse_duration(text)


def test_renew_before_is_a_fraction_or_a_duration() -> None:
    assert parse_renew_before("0.5") == 0.5
    assert parse_renew_before("12h") == timedelta(hours=12)
    with pytest.raises(CertConfigError, match="not a fraction"):
        parse_renew_before("0")
