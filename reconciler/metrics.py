"""Prometheus metrics of one reconciler process, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Counters and gauges the loop updates; ``registry`` is what ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "kaito_reconciler_reconciles",
            "Reconciles of Workspaces by result (ok, requeue, error, skipped)",
            ["result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "kaito_reconciler_reconcile_duration_seconds",
            "Time spent in one reconcile of one Workspace",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.queue_depth = Gauge(
            "kaito_reconciler_queue_depth", "Workspaces ready to be reconciled", registry=r
        )
        self.queue_waiting = Gauge(
            "kaito_reconciler_queue_waiting",
            "Workspaces scheduled for a later reconcile (requeue-after or backoff)",
            registry=r,
        )
        self.api_requests = Counter(
            "kaito_reconciler_api_requests",
            "Requests to the Kubernetes API by verb, resource and HTTP status (0: no answer)",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.writes = Counter(
            "kaito_reconciler_writes",
            "Objects written by the reconciler, by kind and operation",
            ["kind", "op"],
            registry=r,
        )
        self.leader = Gauge(
            "kaito_reconciler_leader", "1 while this replica holds the Lease", registry=r
        )
        self.workspaces = Gauge(
            "kaito_reconciler_workspaces", "Workspaces in the cache", registry=r
        )
        self.watch_restarts = Counter(
            "kaito_reconciler_relists",
            "Full lists of a watched resource (start, periodic relist or watch failure)",
            ["resource"],
            registry=r,
        )

    def on_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()
