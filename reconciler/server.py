"""The health and metrics endpoint (aiohttp): ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.metrics import Metrics


@dataclass
class Health:
    """What the loop reports about itself; the handlers only read it."""

    synced: bool = False
    """Every cache has been listed once."""
    leading: bool = False
    last_tick: float = field(default_factory=time.monotonic)
    """When the loop last made progress (monotonic)."""
    stall_after_s: float = 120.0

    def alive(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - self.last_tick < self.stall_after_s


HEALTH = web.AppKey("health", Health)
METRICS = web.AppKey("metrics", Metrics)


async def healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    if not health.alive():
        return web.Response(status=503, text="loop stalled\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    if not health.synced:
        return web.Response(status=503, text="caches not synced\n")
    role = "leader" if health.leading else "standby"
    return web.Response(text=f"ok ({role})\n")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def make_app(health: Health, metrics_: Metrics) -> web.Application:
    app = web.Application()
    app[HEALTH] = health
    app[METRICS] = metrics_
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
