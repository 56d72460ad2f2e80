from __future__ import annotations

import subprocess
import sys
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
        (["--port", "0"], {}, "--port=0 is below 1"),
        (["--port", "x"], {}, "port='x' is not a int"),
        (["--config-poll-seconds", "0"], {}, "--config-poll-seconds=0.0 is below 0.05"),
        (["--log-level", "LOUD"], {}, "--log-level=LOUD is not one of"),
        (["--tls-cert-file", "a.crt"], {}, "--tls-cert-file and --tls-key-file go together"),
        (
            ["--register", "--tls-cert-file", "c", "--tls-key-file", "k"],
            {},
            "--register with --tls-cert-file needs --ca-file",
        ),
        (["--no-kube"], {}, "no serving certificate: pass --tls-cert-file"),
        ([], {"KAITO_WEBHOOK_NO_KUBE": "maybe"}, "is not a boolean"),
        (["--register", "--no-kube"], {}, "--register needs Kubernetes access"),
    ],
)
def test_bad_settings_name_the_flag(argv: list[str], env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words.replace("[", r"\[")):
        load_settings(argv, env=env)


def test_every_setting_has_a_description() -> None:
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert f.metadata["help"].endswith("."), f.name


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
    assert "--port=-1 is below 1" in bad.stderr


def test_certificate_manager_settings_come_from_the_environment() -> None:
    from webhook.serving_tls import cert_settings

    s = load_settings([], env={})
    cs = cert_settings(s, {"KAITO_CERTS_NAMESPACE": "team-a", "KAITO_CERTS_SERVING_VALIDITY": "7d"})
    assert cs.namespace == "team-a"
    assert cs.mutating_webhook_configurations == (s.webhook_name,)
    assert cs.validating_webhook_configurations == (s.webhook_name,)
    assert "127.0.0.1" in cs.ip_addresses
    with pytest.raises(SettingsError, match="KAITO_CERTS_SERVING_VALIDITY"):
        cert_settings(s, {"KAITO_CERTS_SERVING_VALIDITY": "soon"})
