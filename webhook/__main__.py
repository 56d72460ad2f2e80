"""``python -m webhook``: settings → Kubernetes client → admin defaults → TLS → app → serve.

Out-of-cluster (any kubeconfig, same code as in-cluster)::

    KAITO_CERTS_NAMESPACE=default python -m webhook --kubeconfig ~/.kube/config \\
        --host 127.0.0.1 --port 9443 --register

keeps its CA and serving certificate (SANs include 127.0.0.1) in the Secret
default/kaito-webhook-certs, registers Mutating/ValidatingWebhookConfigurations pointing at
https://127.0.0.1:9443 with the CA bundle, keeps the bundle current on rotation, re-creates the
configurations if they are deleted while it runs, and deletes them on exit (SIGINT/SIGTERM):
admission is then off until the next start (Workspaces are not defaulted or validated by the
webhook; the reconciler still refuses invalid ones with InvalidSpec). With
``--tls-cert-file/--tls-key-file/--ca-file`` it serves those files instead (reloaded when they
change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from webhook import registration
from webhook.app import build_deps, create_app, start
from webhook.config_watch import ApiConfigSource, ConfigSource, DirConfigSource
from webhook.errors import KubeError, SettingsError, WebhookError
from webhook.kube import Kube
from webhook.serving_tls import tls_setup
from webhook.settings import Settings, load_settings

log = logging.getLogger("kaito.webhook")


async def _register(kube: Kube, settings: Settings, port: int, ca_pem: bytes) -> None:
    for obj in registration.url_configurations(
        settings.webhook_name,
        settings.register_host,
        port,
        ca_pem,
        timeout=settings.webhook_timeout_seconds,
    ):
        await kube.apply_webhook_configuration(obj)


async def _keep_registered(kube: Kube, settings: Settings, port: int, ca_pem: bytes) -> None:
    """``--register``: re-create the configurations when someone deletes them while we run."""
    while True:
        await asyncio.sleep(settings.register_check_seconds)
        try:
            if not await kube.webhook_configurations_present(settings.webhook_name):
                await _register(kube, settings, port, ca_pem)
                log.warning(
                    "webhook configurations %s were deleted while serving: re-created them",
                    settings.webhook_name,
                )
        except KubeError as exc:
            log.warning("checking webhook configurations %s: %s", settings.webhook_name, exc)


async def serve(settings: Settings) -> None:
    kube = None if settings.no_kube else Kube.connect(settings.kubeconfig)
    try:
        await _serve(settings, kube)
    finally:
        if kube is not None:
            await kube.close()


async def _serve(settings: Settings, kube: Kube | None) -> None:
    """Serve with ``kube``, the process's one client (shared with the certificate manager)."""
    if kube is not None:
        await kube.open()
    source: ConfigSource | None = None
    if settings.config_dir is not None:
        source = DirConfigSource(settings.config_dir)
    elif kube is not None:
        source = ApiConfigSource(kube, settings.config_namespace, settings.config_name)
    deps = build_deps(settings, kube, source)
    tls = await tls_setup(settings, deps.metrics, kube)
    runner, port = await start(create_app(deps), tls.context, settings.host, settings.port)
    log.info("serving https://%s:%d", settings.host, port)
    registered = False
    fresh: asyncio.Task[None] | None = None
    keeper: asyncio.Task[None] | None = None
    try:
        if settings.register:
            assert kube is not None
            if tls.ca_pem is None:
                raise SettingsError("--register needs the CA bundle (--ca-file)")
            await _register(kube, settings, port, tls.ca_pem)
            registered = True
            log.info("registered webhook configurations %s", settings.webhook_name)
            keeper = asyncio.create_task(_keep_registered(kube, settings, port, tls.ca_pem))
        fresh = asyncio.create_task(tls.keep_fresh())  # after registration: it injects caBundle
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for task in (keeper, fresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if registered and kube is not None:
            with contextlib.suppress(KubeError):
                await kube.delete_webhook_configurations(settings.webhook_name)
                log.info("removed webhook configurations %s", settings.webhook_name)
        await runner.cleanup()


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
