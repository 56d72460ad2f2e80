"""The health and metrics endpoint, served by a real aiohttp server."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from reconciler.metrics import Metrics
from reconciler.server import Health, make_app
from tests.reconciler.aio import sync
from tests.support.procs import free_port


@sync
async def test_health_readiness_and_metrics() -> None:
    health, metrics = Health(stall_after_s=60), Metrics()
    metrics.on_request("list", "pods", 200)
    metrics.reconciles.labels("ok").inc()
    runner = web.AppRunner(make_app(health, metrics))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/healthz") as r:
                assert r.status == 200
            async with http.get("/readyz") as r:
                assert r.status == 503
                assert "not synced" in await r.text()
            health.synced, health.leading = True, True
            async with http.get("/readyz") as r:
                assert r.status == 200
                assert "leader" in await r.text()
            async with http.get("/metrics") as r:
                text = await r.text()
            assert (
                'kaito_reconciler_api_requests_total{code="200",resource="pods",verb="list"} 1.0'
                in text
            )
            assert 'kaito_reconciler_reconciles_total{result="ok"} 1.0' in text
            assert "kaito_reconciler_queue_depth" in text
            health.last_tick -= 120
            async with http.get("/healthz") as r:
                assert r.status == 503
    finally:
        await runner.cleanup()
