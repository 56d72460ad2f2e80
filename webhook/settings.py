"""The webhook's one settings object: every field has a description, a flag, an environment
variable (``KAITO_WEBHOOK_<FIELD>``) and bounds, declared once with ``api.settings_spec``. Flags
win over the environment, which wins over the defaults. The certificate manager's settings
(``KAITO_CERTS_*``) nest in ``Settings.certs``: one object per process, every bad value refused
(exit 2) before any I/O. ``python -m webhook --help`` lists them all.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import settings_spec
from api.settings_spec import Spec
from certs.errors import CertError
from certs.settings import ENV_PREFIX as CERTS_ENV_PREFIX
from certs.settings import CertSettings
from webhook.errors import SettingsError

ENV_PREFIX = "KAITO_WEBHOOK_"
DEFAULT_WEBHOOK_NAME = "kaito-workspace-webhook"


def _default_certs(webhook_name: str, **values: Any) -> CertSettings:
    """The certificate manager's settings; its configurations default to the webhook's name."""
    configurations = ("mutating_webhook_configurations", "validating_webhook_configurations")
    if not any(name in values for name in configurations):
        values.update(dict.fromkeys(configurations, (webhook_name,)))
    return CertSettings(**values)


def _m(help: str, **spec: Any) -> dict[str, Any]:
    return {"spec": Spec(help=help, **spec)}


@dataclass(frozen=True)
class Settings:
    host: str = field(
        default="0.0.0.0", metadata=_m("Address to listen on (127.0.0.1 for out-of-cluster runs).")
    )
    port: int = field(default=9443, metadata=_m("HTTPS port.", low=1, high=65535))
    tls_cert_file: Path | None = field(
        default=None,
        metadata=_m(
            "PEM serving certificate (chain); reloaded when the file changes. Unset: the "
            "certificate manager keeps the CA and certificate in a Secret, rotates them and "
            "writes the caBundle (configured by KAITO_CERTS_* variables)."
        ),
    )
    tls_key_file: Path | None = field(
        default=None, metadata=_m("PEM private key of the serving certificate.")
    )
    ca_file: Path | None = field(
        default=None,
        metadata=_m("PEM CA bundle that signed the serving certificate (the webhooks' caBundle)."),
    )
    tls_reload_seconds: float = field(
        default=10.0,
        metadata=_m(
            "How often to check the certificate files for a rotation.", low=0.05, high=3600
        ),
    )
    kubeconfig: Path | None = field(
        default=None,
        metadata=_m(
            "Kubeconfig to reach the apiserver; unset: the in-cluster service account "
            "(or no Kubernetes access with --no-kube)."
        ),
    )
    no_kube: bool = field(
        default=False,
        metadata=_m(
            "Run without Kubernetes access: no ConfigMap reload, no preferred-node checks."
        ),
    )
    config_namespace: str = field(
        default="kaito-system", metadata=_m("Namespace of the admin defaults ConfigMap.")
    )
    config_name: str = field(
        default="kaito-config", metadata=_m("Name of the admin defaults ConfigMap.")
    )
    config_dir: Path | None = field(
        default=None,
        metadata=_m("Read the admin defaults from a mounted ConfigMap directory, not the API."),
    )
    config_poll_seconds: float = field(
        default=5.0,
        metadata=_m("How often to re-read the admin defaults.", low=0.05, high=3600),
    )
    max_body_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_m(
            "Largest AdmissionReview accepted; larger ones get HTTP 400.",
            low=1024,
            high=64 * 1024 * 1024,
        ),
    )
    max_object_depth: int = field(
        default=64,
        metadata=_m(
            "Deepest nesting of an admitted object (dicts and lists); deeper objects get "
            "allowed: false naming this limit.",
            low=16,
            high=500,
        ),
    )
    max_object_nodes: int = field(
        default=200_000,
        metadata=_m(
            "Most fields and values in an admitted object; larger ones get allowed: false "
            "naming this limit.",
            low=1000,
            high=10_000_000,
        ),
    )
    header_timeout_seconds: float = field(
        default=10.0,
        metadata=_m(
            "A connection that has not sent a complete request head within this time of "
            "opening (or of its previous response) is closed.",
            low=0.1,
            high=600,
        ),
    )
    body_timeout_seconds: float = field(
        default=10.0,
        metadata=_m(
            "Time allowed to receive a request body; a slower one gets HTTP 408.",
            low=0.1,
            high=600,
        ),
    )
    node_lookup_timeout_seconds: float = field(
        default=3.0,
        metadata=_m("Time allowed to read the preferred nodes from the API.", low=0.1, high=30),
    )
    template_dry_run: bool = field(
        default=True,
        metadata=_m(
            "Check a template Workspace's Deployment with a server-side dry run (the apiserver's "
            "own validation of the Pod template); needs patch on deployments."
        ),
    )
    dry_run_timeout_seconds: float = field(
        default=2.0,
        metadata=_m(
            "Time allowed for that dry run; when it fails or times out the Workspace is "
            "admitted with a warning.",
            low=0.1,
            high=30,
        ),
    )
    register: bool = field(
        default=False,
        metadata=_m(
            "Out-of-cluster mode: register the Mutating/ValidatingWebhookConfigurations by URL "
            "(https://REGISTER_HOST:PORT) with the CA bundle, re-create them if they are "
            "deleted while running, and remove them on exit: admission is then OFF until the "
            "next start (Workspaces are not defaulted or validated by the webhook; the "
            "reconciler still refuses invalid ones with InvalidSpec)."
        ),
    )
    register_check_seconds: float = field(
        default=10.0,
        metadata=_m(
            "With --register: how often to check that the configurations still exist.",
            low=0.1,
            high=3600,
        ),
    )
    register_host: str = field(
        default="127.0.0.1", metadata=_m("Host of the webhook URL written when registering.")
    )
    webhook_name: str = field(
        default=DEFAULT_WEBHOOK_NAME,
        metadata=_m("Name of the webhook configurations written when registering."),
    )
    webhook_timeout_seconds: int = field(
        default=5, metadata=_m("timeoutSeconds of the registered webhooks.", low=1, high=30)
    )
    log_level: str = field(
        default="INFO", metadata=_m("Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    )
    certs: CertSettings = field(
        default_factory=lambda: _default_certs(DEFAULT_WEBHOOK_NAME),
        metadata=_m(
            "The certificate manager's settings (when no --tls-cert-file is given), from "
            "KAITO_CERTS_* variables; its webhook configurations default to --webhook-name.",
            nested=CERTS_ENV_PREFIX,
        ),
    )

    def check(self) -> Settings:
        """Raise ``SettingsError`` naming every out-of-bounds value and bad combination."""
        problems = settings_spec.problems(self, ENV_PREFIX)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("--tls-cert-file and --tls-key-file go together")
        files = self.tls_cert_file is not None
        if self.register and files and self.ca_file is None:
            problems.append(
                "--register with --tls-cert-file needs --ca-file (the caBundle written into the "
                "webhooks)"
            )
        if self.register and self.no_kube:
            problems.append("--register needs Kubernetes access; drop --no-kube")
        if not files and self.no_kube:
            problems.append(
                "no serving certificate: pass --tls-cert-file/--tls-key-file, or drop --no-kube "
                "to let the certificate manager keep one in a Secret (KAITO_CERTS_* settings)"
            )
        if problems:
            raise SettingsError("; ".join(problems))
        return self


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webhook",
        description=(
            "KAITO Workspace admission webhook (HTTPS): /mutate, /validate, /healthz, /readyz, "
            f"/metrics. Every flag can also be set as {ENV_PREFIX}<FLAG_NAME>; the certificate "
            f"manager is set by {CERTS_ENV_PREFIX}<FIELD> variables (see the README)."
        ),
    )
    settings_spec.add_arguments(p, Settings, ENV_PREFIX)
    return p


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags, then the environment, then the defaults (checked), with the
    certificate manager's settings nested. Raises ``SettingsError``; reads no file, no API."""
    env = os.environ if env is None else env
    args = vars(parser().parse_args(None if argv is None else list(argv)))
    values, problems = settings_spec.read(Settings, args, env, ENV_PREFIX)
    cert_values, cert_problems = settings_spec.from_env(CertSettings, env, CERTS_ENV_PREFIX)
    problems += cert_problems
    if problems:
        raise SettingsError("; ".join(problems))
    try:
        values["certs"] = _default_certs(
            values.get("webhook_name", DEFAULT_WEBHOOK_NAME), **cert_values
        )
    except CertError as exc:
        raise SettingsError(f"{CERTS_ENV_PREFIX}* variables: {exc}") from None
    return Settings(**values).check()
