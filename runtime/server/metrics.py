"""Prometheus metrics with vLLM's names, in a registry owned by one app (no global state).

A vLLM dashboard or autoscaler reads the same series from this server: ``vllm:num_requests_running``
(sequences in the running batch), ``vllm:num_requests_waiting``, ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``, ``vllm:time_to_first_token_seconds``,
``vllm:e2e_request_latency_seconds``, ``vllm:request_success_total{finished_reason}``,
``vllm:iteration_tokens_total`` (tokens per engine step, i.e. the batch size of decode steps) and
more. ``kaito:http_requests_total{method,route,status}`` counts every HTTP answer by status.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
TOKEN_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LENGTH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The server's metrics; also the engine's observer."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        m = ["model_name"]
        self.model_name = model_name
        self.running = Gauge(
            "vllm:num_requests_running", "Sequences in the running batch.", m, registry=r
        ).labels(model_name)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting for a batch slot.", m, registry=r
        ).labels(model_name)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefilled prompt tokens.", m, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated tokens.", m, registry=r
        ).labels(model_name)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Time from arrival to the last generated token.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Time a request waited before joining a batch.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.step_time = Histogram(
            "vllm:inter_token_latency_seconds",
            "Duration of one engine step (one token for every running sequence).",
            m,
            buckets=TOKEN_STEP_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.iteration_tokens = Histogram(
            "vllm:iteration_tokens_total",
            "Tokens produced per engine step (the batch size).",
            m,
            buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens",
            "Prompt length of finished requests.",
            m,
            buckets=LENGTH_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Generated tokens of finished requests.",
            m,
            buckets=LENGTH_BUCKETS,
            registry=r,
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by reason (stop, length, abort).",
            [*m, "finished_reason"],
            registry=r,
        )
        self._http = Counter(
            "kaito:http_requests",
            "HTTP answers by method, route and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        for reason in ("stop", "length", "abort"):
            self._success.labels(model_name, reason)

    # ---- engine observer ---------------------------------------------------------------------

    def queue_changed(self, waiting: int, running: int) -> None:
        self.waiting.set(waiting)
        self.running.set(running)

    def request_admitted(self, queued_seconds: float, prompt_tokens: int) -> None:
        self.queue_time.observe(queued_seconds)
        self.prompt_tokens.inc(prompt_tokens)
        self.request_prompt_tokens.observe(prompt_tokens)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def step_done(self, rows: int, new_tokens: int, seconds: float) -> None:
        self.generation_tokens.inc(new_tokens)
        self.iteration_tokens.observe(rows)
        self.step_time.observe(seconds)

    def request_done(self, seconds: float, generated_tokens: int) -> None:
        self.e2e.observe(seconds)
        self.request_generation_tokens.observe(generated_tokens)

    # ---- server ------------------------------------------------------------------------------

    def request_finished(self, reason: str) -> None:
        self._success.labels(self.model_name, reason).inc()

    def http_answer(self, method: str, route: str, status: int) -> None:
        self._http.labels(method, route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
