"""``python -m webhook``: settings → Kubernetes client → admin defaults → TLS → app → serve.

Out-of-cluster (any kubeconfig, same code as in-cluster)::

    python -m webhook --kubeconfig ~/.kube/config --host 127.0.0.1 --port 9443 \\
        --tls-cert-file serving.crt --tls-key-file serving.key --ca-file ca.crt --register

registers Mutating/ValidatingWebhookConfigurations pointing at https://127.0.0.1:9443 with the
CA bundle, and deletes them on exit (SIGINT/SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

from webhook import registration
from webhook.app import build_deps, create_app, start
from webhook.config_watch import ApiConfigSource, ConfigSource, DirConfigSource
from webhook.errors import KubeError, SettingsError, WebhookError
from webhook.kube import Kube
from webhook.settings import Settings, load_settings
from webhook.tls import FileCertReloader, server_context

log = logging.getLogger("kaito.webhook")


def tls_setup(settings: Settings) -> tuple[ssl.SSLContext, FileCertReloader]:
    """The one place that makes the server's TLS context (the certs package plugs in here)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise SettingsError(
            "no serving certificate: pass --tls-cert-file and --tls-key-file "
            "(an admission webhook must serve HTTPS)"
        )
    ctx = server_context(settings.tls_cert_file, settings.tls_key_file)
    return ctx, FileCertReloader(ctx, settings.tls_cert_file, settings.tls_key_file)


async def serve(settings: Settings) -> None:
    kube = None if settings.no_kube else Kube.connect(settings.kubeconfig)
    source: ConfigSource | None = None
    if settings.config_dir is not None:
        source = DirConfigSource(settings.config_dir)
    elif kube is not None:
        source = ApiConfigSource(kube, settings.config_namespace, settings.config_name)
    deps = build_deps(settings, kube, source)
    ctx, reloader = tls_setup(settings)
    reloader.metrics = deps.metrics
    deps.background = (lambda: reloader.run(settings.tls_reload_seconds),)
    runner, port = await start(create_app(deps), ctx, settings.host, settings.port)
    log.info("serving https://%s:%d", settings.host, port)
    registered = False
    try:
        if settings.register:
            assert kube is not None
            assert settings.ca_file is not None
            ca = settings.ca_file.read_bytes()
            for obj in registration.url_configurations(
                settings.webhook_name,
                settings.register_host,
                port,
                ca,
                timeout=settings.webhook_timeout_seconds,
            ):
                await kube.apply_webhook_configuration(obj)
            registered = True
            log.info("registered webhook configurations %s", settings.webhook_name)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if registered and kube is not None:
            with contextlib.suppress(KubeError):
                await kube.delete_webhook_configurations(settings.webhook_name)
                log.info("removed webhook configurations %s", settings.webhook_name)
        await runner.cleanup()
        if kube is not None:
            kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"python -m webhook: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except WebhookError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
