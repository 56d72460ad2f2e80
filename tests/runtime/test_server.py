"""Health, metrics, overload and disconnects, over real HTTP against real servers."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.server.errors import ModelLoadError
from runtime.server.loader import LoadedModel
from runtime.server.settings import Settings
from tests.runtime.harness import RunningServer, make_settings, start_server
from tests.support.procs import wait_until

LONG = {"prompt": "Kaito", "max_tokens": 480, "temperature": 0, "ignore_eos": True}


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 when absent)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_health_is_503_until_the_model_is_loaded(
    tiny_model: Path, loaded_tiny: LoadedModel
) -> None:
    gate = threading.Event()

    def gated(settings: Settings) -> LoadedModel:
        gate.wait(60)
        return loaded_tiny

    running = RunningServer(make_settings(tiny_model), gated)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            for path in ("/health", "/healthz"):
                response = client.get(path)
                assert response.status_code == 503
                assert response.json()["status"] == "Loading"
            assert client.post("/chat", json={"prompt": "x"}).status_code == 503
            error = client.post("/v1/completions", json={"prompt": "x"}).json()["error"]
            assert error["code"] == "model_loading"
            gate.set()
            running.wait_ready()
            for path in ("/health", "/healthz"):
                assert client.get(path).json() == {"status": "Healthy"}
            assert (
                client.post(
                    "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 2}}
                ).status_code
                == 200
            )
    finally:
        gate.set()
        running.stop()


def test_a_failed_load_is_reported(tiny_model: Path) -> None:
    def broken(settings: Settings) -> LoadedModel:
        raise ModelLoadError("adapter 'a': target module q_proj has shape 64x64, adapter 32x64")

    running = RunningServer(make_settings(tiny_model), broken)
    try:
        with pytest.raises(RuntimeError, match="q_proj"):
            running.wait_ready()
        with httpx.Client(base_url=running.url, timeout=30) as client:
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "Failed"
            assert "q_proj" in health.json()["detail"]
            assert "q_proj" in client.post("/chat", json={"prompt": "x"}).json()["detail"]
    finally:
        running.stop()


def test_metrics_move(http: httpx.Client) -> None:
    model = {"model_name": "tiny-llama"}
    before_prompt = metric(http, "vllm:prompt_tokens_total", **model)
    before_generated = metric(http, "vllm:generation_tokens_total", **model)
    before_ttft = metric(http, "vllm:time_to_first_token_seconds_count", **model)
    before_ok = metric(
        http, "kaito:http_requests_total", method="POST", route="/chat", status="200"
    )
    before_stop = metric(http, "vllm:request_success_total", finished_reason="length", **model)
    body = {
        "prompt": "Kaito",
        "generate_kwargs": {"max_new_tokens": 5, "eos_token_id": 3, "do_sample": False},
    }
    assert http.post("/chat", json=body).status_code == 200
    assert metric(http, "vllm:prompt_tokens_total", **model) > before_prompt
    assert metric(http, "vllm:generation_tokens_total", **model) >= before_generated + 1
    assert metric(http, "vllm:time_to_first_token_seconds_count", **model) == before_ttft + 1
    assert (
        metric(http, "kaito:http_requests_total", method="POST", route="/chat", status="200")
        == before_ok + 1
    )
    assert (
        metric(http, "vllm:request_success_total", finished_reason="length", **model)
        + metric(http, "vllm:request_success_total", finished_reason="stop", **model)
        > before_stop
    )
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:iteration_tokens_total_count",
    ):
        assert name in http.get("/metrics").text
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


def test_health_answers_while_generating(slow_server: RunningServer) -> None:
    done = threading.Event()
    body = {**LONG, "max_tokens": 64}

    def long_request() -> None:
        with httpx.Client(base_url=slow_server.url, timeout=300) as client:
            client.post("/v1/completions", json=body)
        done.set()

    thread = threading.Thread(target=long_request)
    thread.start()
    with httpx.Client(base_url=slow_server.url, timeout=30) as http:
        wait_until(
            lambda: metric(http, "vllm:num_requests_running") >= 1, 60, "a running row", every=0.05
        )
        # Answered while the row is still generating: a blocked event loop would answer after.
        assert http.get("/health").status_code == 200
        assert metric(http, "vllm:num_requests_running") >= 1
        assert not done.is_set()
    thread.join(300)


def test_overload_answers_429_then_recovers(tiny_model: Path, loaded_tiny: LoadedModel) -> None:
    running = start_server(
        make_settings(tiny_model, max_num_seqs=1, max_queued_requests=1, max_n=1, retry_after=2),
        loaded_tiny,
    )
    running.wait_ready()
    try:
        statuses: list[int] = []
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def send(path: str, body: dict[str, object]) -> None:
            with httpx.Client(base_url=running.url, timeout=120) as client:
                response = client.post(path, json=body)
            with lock:
                statuses.append(response.status_code)
                answers.append(response)

        threads = [
            threading.Thread(target=send, args=("/v1/completions", {**LONG, "max_tokens": 200}))
            for _ in range(4)
        ] + [
            threading.Thread(
                target=send,
                args=(
                    "/chat",
                    {"prompt": "x", "generate_kwargs": {"max_new_tokens": 200, "eos_token_id": 3}},
                ),
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert 429 in statuses, statuses
        assert 200 in statuses, statuses
        for response in answers:
            if response.status_code == 429:
                assert response.headers["Retry-After"] == "2"
                body = response.json()
                if response.request.url.path == "/chat":
                    assert "capacity" in body["detail"]
                else:
                    assert body["error"]["code"] == "rate_limit_exceeded"
        with httpx.Client(base_url=running.url, timeout=120) as client:
            assert (
                client.post(
                    "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 2}}
                ).status_code
                == 200
            )
            assert metric(client, "vllm:num_requests_waiting") == 0
            assert metric(client, "kaito:http_requests_total", status="429") >= 1
    finally:
        running.stop()


def test_a_disconnected_client_frees_its_row(slow_server: RunningServer) -> None:
    with httpx.Client(base_url=slow_server.url, timeout=30) as http:
        check_disconnects(slow_server, http)


def check_disconnects(slow_server: RunningServer, http: httpx.Client) -> None:
    labels = {"finished_reason": "abort", "model_name": "tiny-llama"}
    aborts = metric(http, "vllm:request_success_total", **labels)
    generated = metric(http, "vllm:generation_tokens_total")
    # A streaming client that reads one chunk and hangs up.
    with (
        httpx.Client(base_url=slow_server.url, timeout=300) as client,
        client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data: "):
                break
    wait_until(
        lambda: metric(http, "vllm:num_requests_running") == 0, 60, "no running row", every=0.05
    )
    # A non-streaming client that gives up waiting.
    with (
        httpx.Client(base_url=slow_server.url, timeout=1.0) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post(
            "/chat",
            json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 480, "eos_token_id": 3}},
        )
    wait_until(
        lambda: metric(http, "vllm:num_requests_running") == 0, 60, "no running row", every=0.05
    )
    assert metric(http, "vllm:request_success_total", **labels) == aborts + 2
    # Both rows left the batch early: far fewer tokens than the 2 x 480 asked for.
    assert metric(http, "vllm:generation_tokens_total") - generated < 480


def test_a_disconnect_is_noticed_without_handler_cancellation(tiny_model: Path) -> None:
    """Other runners may not cancel handlers: the server then polls the connection."""
    from runtime.server.loader import load_model
    from tests.support.tiny_model import MEDIUM_SPEC, build_tiny_llama

    running = RunningServer(
        make_settings(build_tiny_llama(MEDIUM_SPEC)), load_model, handler_cancellation=False
    )
    try:
        running.wait_ready()
        with httpx.Client(base_url=running.url, timeout=30) as http:
            with (
                httpx.Client(base_url=running.url, timeout=1.0) as client,
                pytest.raises(httpx.ReadTimeout),
            ):
                client.post("/v1/completions", json=LONG)
            wait_until(
                lambda: metric(http, "vllm:num_requests_running") == 0,
                60,
                "no running row",
                every=0.05,
            )
            labels = {"finished_reason": "abort", "model_name": "tiny-llama"}
            assert metric(http, "vllm:request_success_total", **labels) == 1
            assert metric(http, "vllm:generation_tokens_total") < 480
    finally:
        running.stop()
