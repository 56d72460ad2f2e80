"""Prometheus metrics of the webhook, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class Metrics:
    """Requests, admissions, denials by reason, latency, config reloads, node lookups."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kaito_webhook_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.admissions = Counter(
            "kaito_webhook_admissions_total",
            "Admission answers by endpoint and whether the request was allowed.",
            ["endpoint", "allowed"],
            registry=r,
        )
        self.denials = Counter(
            "kaito_webhook_denials_total",
            "Denied admissions by reason (one count per distinct reason of a denial).",
            ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            "kaito_webhook_request_duration_seconds",
            "Time from reading the request to writing the answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "kaito_webhook_bad_requests_total",
            "Malformed or oversized AdmissionReviews answered with HTTP 400.",
            ["endpoint"],
            registry=r,
        )
        self.config_reloads = Counter(
            "kaito_webhook_config_reloads_total",
            "Admin defaults reloads by result (ok, error, missing).",
            ["result"],
            registry=r,
        )
        self.config_ok = Gauge(
            "kaito_webhook_config_ok",
            "1 when the last read of the admin defaults was valid, 0 when the last good "
            "settings are kept because it was not.",
            registry=r,
        )
        self.config_generation = Gauge(
            "kaito_webhook_config_generation",
            "Number of admin defaults versions applied since start.",
            registry=r,
        )
        self.node_lookups = Counter(
            "kaito_webhook_node_lookups_total",
            "Preferred-node lookups by result (found, missing, error).",
            ["result"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "kaito_webhook_tls_reloads_total",
            "Serving certificate reloads by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.internal_errors = Counter(
            "kaito_webhook_internal_errors_total",
            "Requests whose evaluation raised (answered with a denial, never a 5xx).",
            ["endpoint"],
            registry=r,
        )
        self.config_ok.set(1)
        for endpoint in ("mutate", "validate"):  # export zeros before the first request
            self.latency.labels(endpoint)
            self.bad_requests.labels(endpoint)
            self.internal_errors.labels(endpoint)
            for allowed in ("true", "false"):
                self.admissions.labels(endpoint, allowed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
