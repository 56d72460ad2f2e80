from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from webhook.errors import SettingsError
from webhook.settings import Settings, load_settings


def test_defaults_env_and_flags() -> None:
    assert load_settings([], env={}) == Settings()
    s = load_settings(
        ["--port", "8443", "--no-kube", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"],
        env={
            "KAITO_WEBHOOK_PORT": "7000",
            "KAITO_WEBHOOK_CONFIG_POLL_SECONDS": "0.5",
            "KAITO_WEBHOOK_CONFIG_DIR": "/etc/kaito",
        },
    )
    assert s.port == 8443  # flags win over the environment
    assert s.config_poll_seconds == 0.5
    assert s.config_dir == Path("/etc/kaito")
    assert s.no_kube is True
    assert load_settings([], env={"KAITO_WEBHOOK_REGISTER": "no"}).register is False


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--port", "0"], {}, "--port / KAITO_WEBHOOK_PORT='0': below the minimum 1; use a"),
        (["--port", "x"], {}, "--port / KAITO_WEBHOOK_PORT='x': not a whole number; use a"),
        (["--config-poll-seconds", "0"], {}, "KAITO_WEBHOOK_CONFIG_POLL_SECONDS='0': below the"),
        (["--log-level", "LOUD"], {}, "LOG_LEVEL='LOUD': not an allowed value; use one of DEBUG"),
        (["--tls-cert-file", "a.crt"], {}, "--tls-cert-file and --tls-key-file go together"),
        (
            ["--register", "--tls-cert-file", "c", "--tls-key-file", "k"],
            {},
            "--register with --tls-cert-file needs --ca-file",
        ),
        (["--no-kube"], {}, "no serving certificate: pass --tls-cert-file"),
        ([], {"KAITO_WEBHOOK_NO_KUBE": "maybe"}, "NO_KUBE='maybe': not a boolean; use true or"),
        ([], {"KAITO_WEBHOOK_PORT": "70000"}, "PORT='70000': above the maximum 65535; use a"),
        ([], {"KAITO_CERTS_CHECK_INTERVAL": "soon"}, "KAITO_CERTS_CHECK_INTERVAL='soon': "),
        ([], {"KAITO_CERTS_NAMESPACE": "A_B"}, "KAITO_CERTS_NAMESPACE='A_B': not a DNS-1123"),
        (["--register", "--no-kube"], {}, "--register needs Kubernetes access"),
    ],
)
def test_bad_settings_name_the_flag(argv: list[str], env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words.replace("[", r"\[")):
        load_settings(argv, env=env)


def test_every_setting_has_a_description() -> None:
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert f.metadata["spec"].help.endswith("."), f.name


def test_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "webhook", "--help"], capture_output=True, text=True, check=True
    )
    assert "--register" in out.stdout
    assert "KAITO_WEBHOOK_PORT" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "webhook", "--port", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "--port / KAITO_WEBHOOK_PORT='-1': below the minimum 1" in bad.stderr


def test_certificate_manager_settings_nest_in_the_webhooks() -> None:
    env = {"KAITO_CERTS_NAMESPACE": "team-a", "KAITO_CERTS_SERVING_VALIDITY": "7d"}
    s = load_settings(["--webhook-name", "hooks"], env=env)
    cs = s.certs
    assert cs.namespace == "team-a"
    assert cs.serving_validity == timedelta(days=7)
    assert cs.mutating_webhook_configurations == ("hooks",)
    assert cs.validating_webhook_configurations == ("hooks",)
    assert "127.0.0.1" in cs.ip_addresses
    only = load_settings([], env={"KAITO_CERTS_MUTATING_WEBHOOK_CONFIGURATIONS": "a"}).certs
    assert (only.mutating_webhook_configurations, only.validating_webhook_configurations) == (
        ("a",),
        (),
    )
    with pytest.raises(SettingsError, match="KAITO_CERTS_SERVING_VALIDITY"):
        load_settings([], env={"KAITO_CERTS_SERVING_VALIDITY": "soon"})
