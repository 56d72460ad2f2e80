"""Where the serving certificate comes from: PEM files, or the ``certs`` manager.

``tls_setup`` returns the ``ssl.SSLContext`` to serve with (TLS 1.2+), the CA bundle that clients
(the apiserver, through ``caBundle``) must trust, and a coroutine that keeps the certificate
fresh while the server runs:

* files (``--tls-cert-file``/``--tls-key-file``/``--ca-file``): reloaded in place when the files
  change (``webhook.tls.FileCertReloader``);
* otherwise the certificate manager (``certs.manager``): the CA and serving certificate live in a
  Secret (reused across restarts and replicas), are rotated before expiry, and the CA bundle is
  written into the webhook configurations named ``--webhook-name``; a rotation reloads the live
  context (``certs.tls.ReloadableServerContext``). Its settings come from ``KAITO_CERTS_*``
  environment variables, nested in the webhook's settings (``Settings.certs``). It talks to the
  API through the webhook's own client (one client per process).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from certs.errors import CertError, CertReloadError
from certs.kube import CertKube
from certs.manager import CertManager
from certs.plan import CertBundle
from certs.tls import ReloadableServerContext
from webhook.errors import WebhookError
from webhook.kube import Kube
from webhook.metrics import Metrics
from webhook.settings import Settings
from webhook.tls import FileCertReloader, server_context


@dataclass
class ServingTls:
    context: ssl.SSLContext
    ca_pem: bytes | None
    keep_fresh: Callable[[], Coroutine[Any, Any, None]]
    manager: CertManager | None = None


async def tls_setup(settings: Settings, metrics: Metrics, kube: Kube | None) -> ServingTls:
    """The serving TLS from files, or from the certificate manager talking through ``kube``."""
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        ctx = server_context(settings.tls_cert_file, settings.tls_key_file)
        reloader = FileCertReloader(ctx, settings.tls_cert_file, settings.tls_key_file, metrics)
        ca = settings.ca_file.read_bytes() if settings.ca_file is not None else None
        return ServingTls(
            context=ctx,
            ca_pem=ca,
            keep_fresh=lambda: reloader.run(settings.tls_reload_seconds),
        )
    if kube is None:
        raise WebhookError(
            "serving certificate: the certificate manager needs the Kubernetes API; pass "
            "--tls-cert-file and --tls-key-file, or drop --no-kube"
        )
    manager = CertManager(settings.certs, CertKube(kube.client))
    try:
        bundle, _ = await manager.ensure_secret()
        live = ReloadableServerContext(bundle)
    except CertError as exc:
        raise WebhookError(f"serving certificate: {exc}") from exc

    def on_change(new: CertBundle) -> None:
        try:
            changed = live.reload(new)
        except CertReloadError:
            metrics.tls_reloads.labels("error").inc()
            raise
        if changed:
            metrics.tls_reloads.labels("ok").inc()

    return ServingTls(
        context=live.context,
        ca_pem=bundle.ca_bundle_pem,
        keep_fresh=lambda: manager.run(on_change),
        manager=manager,
    )
