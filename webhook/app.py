"""The aiohttp application: ``/mutate``, ``/validate``, ``/healthz``, ``/readyz``, ``/metrics``.

Handlers parse the AdmissionReview, (for ``/validate``) read the preferred nodes through
``webhook.kube``, call the pure decisions of ``webhook.decisions`` and map the result. A
malformed or oversized review is answered with HTTP 400; an invalid Workspace with
``allowed: false`` and a message naming each field, bad value and fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from api.limits import too_complex
from api.presets import load_presets
from api.skus import load_skus
from api.validation import FieldError, NodeFacts
from webhook import decisions
from webhook.config_watch import ConfigSource, ConfigState, poll
from webhook.dry_run import FIELD_MANAGER as DRY_RUN_MANAGER
from webhook.dry_run import probe_deployment
from webhook.errors import BadReview, KubeError
from webhook.kube import Kube
from webhook.metrics import Metrics
from webhook.review import AdmissionRequest, parse_review, review_response
from webhook.settings import Settings

log = logging.getLogger("kaito.webhook")


@dataclass
class Deps:
    """What the handlers use; built by ``build_deps`` or by tests."""

    settings: Settings
    state: ConfigState
    metrics: Metrics
    kube: Kube | None = None
    config_source: ConfigSource | None = None


DEPS = web.AppKey("deps", Deps)


def build_deps(settings: Settings, kube: Kube | None, source: ConfigSource | None) -> Deps:
    metrics = Metrics()
    state = ConfigState(load_presets(), load_skus(), metrics)
    if source is None:
        state.apply("<none>", {})  # no source configured: the built-in defaults are final
    return Deps(settings=settings, state=state, metrics=metrics, kube=kube, config_source=source)


def _bad_request(deps: Deps, endpoint: str, message: str) -> web.Response:
    deps.metrics.bad_requests.labels(endpoint).inc()
    return web.json_response({"error": message}, status=400)


async def _lookup_nodes(deps: Deps, names: list[str]) -> dict[str, NodeFacts | None]:
    assert deps.kube is not None
    kube = deps.kube
    timeout = deps.settings.node_lookup_timeout_seconds

    async def one(name: str) -> tuple[str, NodeFacts | None]:
        node = await kube.get_node(name, timeout)
        deps.metrics.node_lookups.labels("missing" if node is None else "found").inc()
        return name, None if node is None else NodeFacts.from_node(node)

    return dict(await asyncio.gather(*(one(n) for n in names)))


async def _decide(deps: Deps, endpoint: str, req: AdmissionRequest) -> decisions.Decision:
    if endpoint == "mutate":
        return decisions.mutate(req, deps.state.config)
    ctx = deps.state.context
    names = decisions.nodes_to_look_up(req)
    if names and deps.kube is not None:
        try:
            ctx = replace(ctx, nodes=await _lookup_nodes(deps, names))
        except KubeError as exc:
            deps.metrics.node_lookups.labels("error").inc()
            error = FieldError(
                "resource.preferredNodes",
                f"the preferred nodes could not be read from the API ({exc})",
                "retry; if it persists, check the webhook's access to nodes",
                "nodes.lookup",
            )
            return decisions.Decision(allowed=False, errors=(error,))
    decision = decisions.validate(req, ctx)
    configmap = decisions.inference_config_to_read(req)
    if configmap is not None and deps.kube is not None:
        decision = await _check_inference_config(deps, req, decision, configmap)
    if decision.allowed and deps.kube is not None and deps.settings.template_dry_run:
        decision = await _dry_run(deps, req, decision)
    return decision


async def _check_inference_config(
    deps: Deps, req: AdmissionRequest, decision: decisions.Decision, configmap: str
) -> decisions.Decision:
    """Read the ``inference.config`` ConfigMap and judge it. A failed read (API down, RBAC)
    admits with a warning rather than blocking every Workspace write: the controller reads the
    ConfigMap again and reports a problem as a status reason without touching the workload."""
    assert deps.kube is not None
    try:
        found = await deps.kube.get_configmap(
            req.namespace, configmap, deps.settings.node_lookup_timeout_seconds
        )
    except KubeError as exc:
        warning = (
            f"inference.config: ConfigMap {configmap} could not be read ({exc}); the controller "
            "checks it and reports problems in the Workspace's status"
        )
        return replace(decision, warnings=(*decision.warnings, warning))
    return decisions.with_inference_config(decision, configmap, None if found is None else found[1])


async def _dry_run(
    deps: Deps, req: AdmissionRequest, decision: decisions.Decision
) -> decisions.Decision:
    """Refuse a template the apiserver would refuse (``webhook.dry_run``)."""
    assert deps.kube is not None
    deployment = probe_deployment(req)
    if deployment is None:
        return decision
    try:
        refusal = await deps.kube.dry_run_apply(
            deployment, DRY_RUN_MANAGER, deps.settings.dry_run_timeout_seconds
        )
    except KubeError as exc:
        warning = f"the Pod template was not checked with the apiserver ({exc})"
        return replace(decision, warnings=(*decision.warnings, warning))
    if not refusal:
        return decision
    error = FieldError(
        "inference.template",
        f"the apiserver refuses the Deployment this template renders: {refusal}",
        "fix the Pod template (`kubectl explain pod.spec` lists its fields)",
        "template.apiserver",
    )
    return decisions.Decision(allowed=False, errors=(error,))


ENCODINGS = ("", "identity", "gzip", "deflate")
"""Request ``Content-Encoding``s read (aiohttp inflates gzip and deflate)."""


async def _read_body(deps: Deps, endpoint: str, request: web.Request) -> bytes | web.Response:
    """The request body, or the 4xx answer saying why it cannot be read."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        deps.metrics.bad_requests.labels(endpoint).inc()
        return web.json_response(
            {
                "error": f"Content-Encoding {encoding!r} is not supported; send the "
                "AdmissionReview uncompressed (or gzip, deflate)"
            },
            status=415,
        )
    try:
        async with asyncio.timeout(deps.settings.body_timeout_seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _bad_request(
            deps, endpoint, f"AdmissionReview larger than {deps.settings.max_body_bytes} bytes"
        )
    except TimeoutError:
        deps.metrics.bad_requests.labels(endpoint).inc()
        response = web.json_response(
            {
                "error": "the request body did not arrive within "
                f"{deps.settings.body_timeout_seconds:g}s (--body-timeout-seconds)"
            },
            status=408,
        )
        response.force_close()
        return response
    except (RequestPayloadError, HttpProcessingError) as exc:  # bad gzip, truncated chunks
        response = _bad_request(deps, endpoint, f"the request body could not be read: {exc}")
        response.force_close()
        request.content.feed_eof()  # no lingering read of the rest of a broken body
        return response


def _too_complex(deps: Deps, req: AdmissionRequest) -> decisions.Decision | None:
    """A refusal for an object too deep or too large to judge (before anything recursive)."""
    for name, obj in (("object", req.object), ("oldObject", req.old_object)):
        why = too_complex(
            obj,
            max_depth=deps.settings.max_object_depth,
            max_nodes=deps.settings.max_object_nodes,
        )
        if why:
            error = FieldError(
                f"({name})",
                why,
                "see --max-object-depth and --max-object-nodes of the webhook",
                "limits",
            )
            return decisions.Decision(allowed=False, errors=(error,))
    return None


def _handler(endpoint: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        deps = request.app[DEPS]
        start = time.perf_counter()
        try:
            body_or_error = await _read_body(deps, endpoint, request)
            if isinstance(body_or_error, web.Response):
                return body_or_error
            try:
                req = parse_review(body_or_error)
            except BadReview as exc:
                return _bad_request(deps, endpoint, str(exc))
            try:
                decision = _too_complex(deps, req) or await _decide(deps, endpoint, req)
            except Exception:  # a bug: fail closed, loudly, without a 5xx
                log.exception("%s of %s failed", endpoint, req.uid)
                deps.metrics.internal_errors.labels(endpoint).inc()
                decision = decisions.Decision(
                    allowed=False,
                    errors=(
                        FieldError(
                            "(object)",
                            "the webhook failed to evaluate this object (see its logs)",
                            "retry, and report the webhook's log",
                            "internal",
                        ),
                    ),
                )
            deps.metrics.admissions.labels(endpoint, str(decision.allowed).lower()).inc()
            for reason in decision.reasons:
                deps.metrics.denials.labels(reason).inc()
            answer = review_response(
                req.uid,
                allowed=decision.allowed,
                message=decision.message,
                code=decisions.DENIAL_CODE,
                reason=decisions.DENIAL_REASON,
                patch=decision.patch,
                warnings=list(decision.warnings),
            )
            return web.json_response(answer)
        finally:
            deps.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[DEPS].state
    if not state.loaded:
        return web.Response(status=503, text="admin defaults not read yet")
    return web.Response(text=f"ok (admin defaults generation {state.generation})")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[DEPS].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@web.middleware
async def count_requests(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    endpoint = request.path.strip("/") or "/"
    deps = request.app[DEPS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        deps.metrics.requests.labels(
            endpoint if exc.status != 404 else "other", str(exc.status)
        ).inc()
        raise
    deps.metrics.requests.labels(endpoint, str(response.status)).inc()
    return response


async def _background(app: web.Application) -> AsyncIterator[None]:
    deps = app[DEPS]
    tasks: list[asyncio.Task[None]] = []
    if deps.config_source is not None:
        tasks.append(
            asyncio.create_task(
                poll(deps.state, deps.config_source, deps.settings.config_poll_seconds)
            )
        )
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(deps: Deps) -> web.Application:
    app = web.Application(
        client_max_size=deps.settings.max_body_bytes, middlewares=[count_requests]
    )
    app[DEPS] = deps
    app.router.add_post("/mutate", _handler("mutate"))
    app.router.add_post("/validate", _handler("validate"))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_background)
    return app


async def start(
    app: web.Application, ssl_context: ssl.SSLContext, host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` over HTTPS; returns the runner (``await runner.cleanup()`` to stop) and
    the bound port (useful with ``port=0``)."""
    settings = app[DEPS].settings
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # aiohttp closes a connection idle for this long, also one that sent part of a
        # request head and stalled: the header timeout.
        keepalive_timeout=settings.header_timeout_seconds,
    )
    await runner.setup()
    # The TLS handshake is bounded by asyncio's own timeout (60 s).
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return runner, bound
