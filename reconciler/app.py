"""Wiring: settings → Kubernetes client, caches, reconciler, leader election, HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping

from aiohttp import web

from api.presets import load_presets
from api.skus import load_skus
from reconciler.controller import Controller
from reconciler.kube import Credentials, Kube, load_credentials
from reconciler.leader import LeaderElector
from reconciler.metrics import Metrics
from reconciler.nodes import NodeClassRef
from reconciler.reconcile import Caches, Options, Reconciler
from reconciler.server import Health, make_app
from reconciler.settings import Settings
from reconciler.workload import Images

log = logging.getLogger("reconciler")


def _default_namespace(settings: Settings, creds: Credentials) -> str:
    return settings.lease_namespace or creds.namespace or "default"


def build_controller(
    settings: Settings, kube: Kube, metrics: Metrics, health: Health, namespace: str
) -> Controller:
    def factory(c: Controller) -> Reconciler:
        return Reconciler(
            kube,
            Caches(
                workspaces=c.workspaces,
                deployments=c.deployments,
                statefulsets=c.statefulsets,
                services=c.services,
                pods=c.pods,
                nodeclaims=c.nodeclaims,
                nodes=c.nodes,
                config=c.config,
                inference_configs=c.inference_configs,
            ),
            Options(
                images=Images(
                    vllm=settings.vllm_image,
                    transformers=settings.transformers_image,
                    vllm_cpu=settings.vllm_cpu_image,
                ),
                node_class=NodeClassRef(
                    settings.node_class_group, settings.node_class_kind, settings.node_class_name
                ),
                pending_requeue_s=settings.pending_requeue_s,
                field_manager=settings.field_manager,
                identity=settings.effective_identity,
                config_name=settings.config_name,
            ),
            presets=load_presets(),
            skus=load_skus(),
            metrics=metrics,
            leading=c.leading,
        )

    return Controller(
        kube,
        namespace=settings.namespace or None,
        relist_interval_s=settings.relist_interval_s,
        workers=settings.workers,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
        metrics=metrics,
        health=health,
        config_ref=(settings.config_namespace or namespace, settings.config_name)
        if settings.config_name
        else None,
        reconciler_factory=factory,
    )


async def serve(settings: Settings, env: Mapping[str, str]) -> None:
    """Run the reconciler until SIGTERM/SIGINT."""
    creds = load_credentials(settings.kubeconfig, settings.context, env)
    namespace = _default_namespace(settings, creds)
    metrics = Metrics()
    health = Health(stall_after_s=max(60.0, settings.relist_interval_s * 4))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    runner = web.AppRunner(make_app(health, metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    for address in runner.addresses:
        log.info("health and metrics on http://%s:%s", *address[:2])

    async with Kube(
        creds,
        field_manager=settings.field_manager,
        on_request=metrics.on_request,
        timeout_s=settings.request_timeout_s,
    ) as kube:
        controller = build_controller(settings, kube, metrics, health, namespace)
        elector_run = None
        if settings.leader_elect:
            elector = LeaderElector(
                kube,
                name=settings.lease_name,
                namespace=namespace,
                identity=settings.effective_identity,
                lease_duration_s=settings.lease_duration_s,
                renew_deadline_s=settings.renew_deadline_s,
                retry_period_s=settings.retry_period_s,
                on_started=controller.on_started_leading,
                on_stopped=controller.on_stopped_leading,
            )
            controller.set_leading(lambda: elector.leading)
            elector_run = elector.run
        task = asyncio.ensure_future(controller.run(elector_run))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    await runner.cleanup()
    log.info("stopped")
