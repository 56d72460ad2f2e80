"""Test helpers: throwaway certificates (``certs.pki``) and a webhook served over real HTTPS
from a thread."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from certs.pki import Issued, make_ca, make_serving_cert
from webhook.app import Deps, build_deps, create_app, start
from webhook.config_watch import ConfigSource
from webhook.kube import Kube
from webhook.settings import Settings
from webhook.tls import FileCertReloader, server_context


@dataclass
class Pki:
    ca: Issued
    ca_pem: bytes
    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.ca.cert


def serving_pem(pki: Pki) -> tuple[bytes, bytes]:
    """A new serving pair for 127.0.0.1 and localhost signed by the test CA (``certs.pki``)."""
    issued = make_serving_cert(
        dt.datetime.now(dt.UTC),
        pki.ca,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        validity=dt.timedelta(hours=2),
    )
    return issued.cert_pem, issued.key_pem


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and serving certificate, written as tls.crt, tls.key and ca.crt."""
    ca = make_ca(dt.datetime.now(dt.UTC), dt.timedelta(days=1))
    pki = Pki(ca, ca.cert_pem, directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    cert, key = serving_pem(pki)
    pki.cert_file.write_bytes(cert)
    pki.key_file.write_bytes(key)
    pki.ca_file.write_bytes(ca.cert_pem)
    return pki


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


class RunningWebhook:
    """The webhook app served on 127.0.0.1 (a free port) from an event loop in a thread."""

    def __init__(
        self,
        pki: Pki,
        *,
        settings: Settings | None = None,
        kube_factory: Callable[[], Kube] | None = None,
        source_factory: Callable[[Kube | None], ConfigSource | None] | None = None,
    ) -> None:
        self.pki = pki
        self.settings = settings or Settings(
            host="127.0.0.1", port=0, tls_cert_file=pki.cert_file, tls_key_file=pki.key_file
        )
        self.kube_factory = kube_factory
        self.source_factory = source_factory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.close_connections = False
        """When set, every response closes its connection: the next request needs a new TLS
        handshake (the apiserver otherwise keeps its connections for long)."""
        self.deps: Deps
        self.reloader: FileCertReloader
        self.reload_task: asyncio.Task[None]

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> RunningWebhook:
        self.thread.start()

        async def boot() -> Any:
            kube = self.kube_factory() if self.kube_factory else None
            source = self.source_factory(kube) if self.source_factory else None
            self.deps = build_deps(self.settings, kube, source)
            ctx = server_context(self.pki.cert_file, self.pki.key_file)
            self.reloader = FileCertReloader(
                ctx, self.pki.cert_file, self.pki.key_file, self.deps.metrics
            )
            self.reload_task = asyncio.create_task(
                self.reloader.run(self.settings.tls_reload_seconds)
            )
            app = create_app(self.deps)

            @web.middleware
            async def maybe_close(request: web.Request, handler: Any) -> web.StreamResponse:
                response: web.StreamResponse = await handler(request)
                if self.close_connections:
                    response.force_close()
                return response

            app.middlewares.append(maybe_close)
            runner, port = await start(app, ctx, "127.0.0.1", 0)
            return runner, port

        self.runner, self.port = self._run(boot())
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop_reloader() -> None:
            self.reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reload_task

        self._run(stop_reloader())
        self._run(self.runner.cleanup())
        if self.deps.kube is not None:
            self._run(self.deps.kube.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=client_context(self.pki.ca_pem), timeout=30
        )

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = self.connection()
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def review(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        status, body, _ = self.request("POST", path, json.dumps(review).encode())
        assert status == 200, body
        out: dict[str, Any] = json.loads(body)
        return out

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.deps.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def admission_review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    uid: str = "00000000-0000-0000-0000-000000000001",
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"},
        "resource": {"group": "kaito.sh", "version": "v1alpha1", "resource": "workspaces"},
        "operation": operation,
        "namespace": "default",
        "name": (obj or {}).get("metadata", {}).get("name", ""),
        "object": obj,
        "userInfo": {"username": "tester"},
    }
    if old is not None:
        req["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}
