"""The webhook served over real HTTPS (a throwaway CA), called with real HTTP clients."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.defaults import default
from tests.api import seed
from tests.webhook.support import (
    Pki,
    RunningWebhook,
    admission_review,
    client_context,
    make_pki,
    serving_pem,
)
from webhook.jsonpatch import apply
from webhook.settings import Settings
from webhook.tls import server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def hook(pki: Pki) -> Iterator[RunningWebhook]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        max_body_bytes=64 * 1024,
    )
    with RunningWebhook(pki, settings=settings) as running:
        yield running


def test_health_ready_and_metrics(hook: RunningWebhook) -> None:
    assert hook.request("GET", "/healthz")[:2] == (200, b"ok")
    status, body, _ = hook.request("GET", "/readyz")
    assert status == 200
    assert body.startswith(b"ok")
    status, body, headers = hook.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"kaito_webhook_request_duration_seconds_bucket" in body


def test_mutate_returns_the_default_patch(hook: RunningWebhook) -> None:
    obj = seed.load(seed.FALCON_7B)
    answer = hook.review("/mutate", admission_review(obj))
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview"
    assert response["allowed"] is True
    assert response["uid"] == "00000000-0000-0000-0000-000000000001"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert apply(obj, patch) == default(obj)
    assert apply(obj, patch)["metadata"]["annotations"] == {"kaito.sh/runtime": "vllm"}


def test_validate_allows_and_denies(hook: RunningWebhook) -> None:
    before = hook.metric("kaito_webhook_denials_total", {"reason": "adapters.image"})
    ok = hook.review("/validate", admission_review(default(seed.load(seed.FALCON_7B))))
    assert ok["response"]["allowed"] is True
    no = hook.review("/validate", admission_review(default(seed.load(seed.FALCON_7B_ADAPTERS))))
    status = no["response"]["status"]
    assert no["response"]["allowed"] is False
    assert status["code"] == 422
    assert "replace <YOUR_IMAGE> with your adapter image" in status["message"]
    after = hook.metric("kaito_webhook_denials_total", {"reason": "adapters.image"})
    assert after == before + 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{}",
        b"[1,2]",
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
    ],
)
@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_malformed_reviews_get_400(hook: RunningWebhook, path: str, body: bytes) -> None:
    status, answer, _ = hook.request("POST", path, body)
    assert status == 400
    assert json.loads(answer)["error"]


def test_oversized_reviews_get_400(hook: RunningWebhook) -> None:
    obj = seed.load(seed.FALCON_7B)
    obj["metadata"]["annotations"] = {"padding": "x" * 70_000}
    before = hook.metric("kaito_webhook_bad_requests_total", {"endpoint": "validate"})
    status, answer, _ = hook.request(
        "POST", "/validate", json.dumps(admission_review(obj)).encode()
    )
    assert status == 400
    assert b"larger than 65536 bytes" in answer
    assert hook.metric("kaito_webhook_bad_requests_total", {"endpoint": "validate"}) == before + 1


def test_tls_1_2_and_1_3_are_served_and_older_versions_are_not(hook: RunningWebhook) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(hook.pki.ca_pem)
        ctx.minimum_version = ctx.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", hook.port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    server = server_context(hook.pki.cert_file, hook.pki.key_file)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2


def _valid_json() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=25,
    )


_review_like = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["admission.k8s.io/v1", "v1", ""]),
        "kind": st.sampled_from(["AdmissionReview", "Pod"]),
        "request": st.fixed_dictionaries(
            {},
            optional={
                "uid": st.text(max_size=5) | st.integers(),
                "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", "X", 3]),
                "kind": st.just({"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"})
                | _valid_json(),
                "object": _valid_json()
                | st.builds(lambda: default(seed.load(seed.FALCON_7B_ADAPTERS))),
                "oldObject": _valid_json(),
            },
        ),
    }
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=st.one_of(_valid_json(), _review_like),
    cut=st.integers(min_value=0, max_value=400) | st.none(),
    path=st.sampled_from(["/mutate", "/validate"]),
)
def test_random_and_truncated_json_never_gets_a_5xx(
    hook: RunningWebhook, doc: Any, cut: int | None, path: str
) -> None:
    body = json.dumps(doc).encode()
    if cut is not None:
        body = body[:cut]
    status, answer, _ = hook.request("POST", path, body)
    assert status in (200, 400), (status, answer)
    if status == 200:
        assert json.loads(answer)["response"]["uid"]
    assert hook.metric("kaito_webhook_internal_errors_total", {"endpoint": path[1:]}) == 0


def test_a_rotated_certificate_is_served_without_restart(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        tls_cert_file=pki.cert_file,
        tls_key_file=pki.key_file,
        tls_reload_seconds=0.05,
    )
    with RunningWebhook(pki, settings=settings) as hook:

        def served_serial() -> int:
            with socket.create_connection(("127.0.0.1", hook.port)) as raw:
                ctx = client_context(pki.ca_pem)
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

        first = served_serial()
        cert, key = serving_pem(pki)
        pki.key_file.write_bytes(key)
        pki.cert_file.write_bytes(cert)
        new = x509.load_pem_x509_certificate(cert).serial_number
        deadline = time.monotonic() + 10
        while served_serial() != new and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served_serial() == new != first
        assert hook.metric("kaito_webhook_tls_reloads_total", {"result": "ok"}) >= 1
        assert hook.request("GET", "/healthz")[0] == 200


def test_a_half_written_rotation_is_not_loaded(tmp_path: Path) -> None:
    from webhook.tls import FileCertReloader

    pki = make_pki(tmp_path)
    ctx = server_context(pki.cert_file, pki.key_file)
    reloader = FileCertReloader(ctx, pki.cert_file, pki.key_file)
    cert, key = serving_pem(pki)
    pki.cert_file.write_bytes(cert)  # the key is not written yet
    assert reloader.check() is False
    pki.key_file.write_bytes(key)
    assert reloader.check() is True
    assert reloader.check() is False  # unchanged since
