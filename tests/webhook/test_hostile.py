"""Malformed and adversarial requests to the real HTTPS server: every one gets a 4xx with a
reason or ``allowed: false`` naming the limit, never a 5xx; stalled clients are cut off."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.defaults import default
from tests.api import seed
from tests.webhook.support import Pki, RunningWebhook, admission_review, client_context, make_pki
from webhook.settings import Settings

PATHS = ("/mutate", "/validate")
RSS_AT_START: list[int] = []


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
        max_body_bytes=2 * 1024 * 1024,
        header_timeout_seconds=0.5,
        body_timeout_seconds=0.5,
    )
    with RunningWebhook(pki, settings=settings) as running:
        RSS_AT_START.append(_rss_bytes())
        yield running


def _post(
    hook: RunningWebhook, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    conn = hook.connection()
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    finally:
        conn.close()
    assert status < 500, raw
    answer: dict[str, Any] = json.loads(raw)
    return status, answer


def _nested(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"name": "x"}
    for _ in range(levels):
        inner = {"a": inner}
    return inner


def _deep_workspace(levels: int) -> dict[str, Any]:
    ws = seed.load(seed.FALCON_7B)
    ws["inference"] = {
        "template": {"spec": {"containers": [{"name": "c", "image": "i", "x": _nested(levels)}]}}
    }
    return ws


def _assert_healthy(hook: RunningWebhook) -> None:
    ok = hook.review("/validate", admission_review(default(seed.load(seed.FALCON_7B))))
    assert ok["response"]["allowed"] is True


@pytest.mark.parametrize("levels", [70, 450, 600, 850])
@pytest.mark.parametrize("path", PATHS)
def test_an_object_too_deep_to_judge_is_refused_naming_the_limit(
    hook: RunningWebhook, path: str, levels: int
) -> None:
    status, answer = _post(
        hook, path, json.dumps(admission_review(_deep_workspace(levels))).encode()
    )
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert "nested more than 64 levels deep" in answer["response"]["status"]["message"]
    assert hook.metric("kaito_webhook_internal_errors_total", {"endpoint": path[1:]}) == 0
    _assert_healthy(hook)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than the webhook parses"),
        (b'{"kind": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
        (b'{"apiVersion": "admission.k8s.io/v1", "x": ' + b"9" * 5000 + b"}", "4300 digits"),
        (b'{"apiVersion": NaN}', "NaN is not a JSON number"),
        (b'{"a": Infinity}', "Infinity is not a JSON number"),
        (b"\xff\xfe\x00", "not JSON"),
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_unparsable_bodies_get_400_with_a_reason(
    hook: RunningWebhook, path: str, body: bytes, words: str
) -> None:
    status, answer = _post(hook, path, body)
    assert status == 400
    assert words in answer["error"]
    _assert_healthy(hook)


@pytest.mark.parametrize("path", PATHS)
def test_content_encodings(hook: RunningWebhook, path: str) -> None:
    review = json.dumps(admission_review(default(seed.load(seed.FALCON_7B)))).encode()
    status, answer = _post(hook, path, gzip.compress(review), {"Content-Encoding": "gzip"})
    assert (status, answer["response"]["allowed"]) == (200, True)
    status, answer = _post(hook, path, zlib.compress(review), {"Content-Encoding": "deflate"})
    assert (status, answer["response"]["allowed"]) == (200, True)
    status, answer = _post(hook, path, review, {"Content-Encoding": "bogus"})
    assert status == 415
    assert "Content-Encoding 'bogus' is not supported" in answer["error"]
    status, answer = _post(hook, path, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert status == 400
    assert "could not be read" in answer["error"]
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))  # 8 MiB of spaces, 8 KiB compressed
    status, answer = _post(hook, path, bomb, {"Content-Encoding": "gzip"})
    assert status == 400
    assert "larger than" in answer["error"]
    _assert_healthy(hook)


def _tls(hook: RunningWebhook) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", hook.port), timeout=20)
    return client_context(hook.pki.ca_pem).wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (the socket's timeout bounds the wait)."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return got


def test_stalled_connections_are_closed(hook: RunningWebhook) -> None:
    silent: list[socket.socket] = [_tls(hook) for _ in range(20)]
    partial_head: list[socket.socket] = [_tls(hook) for _ in range(20)]
    for s in partial_head:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Ty")
    partial_body: list[socket.socket] = [_tls(hook) for _ in range(20)]
    for s in partial_body:
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    try:
        for s in silent + partial_head:
            assert _closed_by_server(s) == b""
        for s in partial_body:
            answer = _closed_by_server(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"did not arrive within 0.5s" in answer
    finally:
        for s in silent + partial_head + partial_body:
            s.close()
    _assert_healthy(hook)


# ------------------------------------------------------------------------------------- fuzz


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c, max_size=5),
        max_leaves=40,
    )


BIG: dict[str, Any] = {
    "<deep>": _nested(200),
    "<long string>": "x" * 100_000,
    "<big int>": 10**4000,
    "<wide list>": list(range(300_000)),
}
"""Large values, named so that hypothesis shows the name, not the value."""


def _mangled_workspace() -> st.SearchStrategy[dict[str, Any]]:
    """A seed Workspace with one field replaced by a random value of any type."""
    fields = [
        ("metadata",),
        ("metadata", "name"),
        ("metadata", "annotations"),
        ("resource",),
        ("resource", "count"),
        ("resource", "instanceType"),
        ("resource", "labelSelector"),
        ("resource", "preferredNodes"),
        ("inference",),
        ("inference", "preset"),
        ("inference", "adapters"),
        ("inference", "template"),
    ]

    def mangle(path: tuple[str, ...], value: Any, example: str) -> dict[str, Any]:
        value = BIG.get(value, value) if isinstance(value, str) else value
        ws = default(seed.load(example))
        where: Any = ws
        for key in path[:-1]:
            where = where.setdefault(key, {}) if isinstance(where, dict) else {}
        if isinstance(where, dict):
            where[path[-1]] = value
        return ws

    return st.builds(
        mangle,
        st.sampled_from(fields),
        _json_values() | st.sampled_from(sorted(BIG)),
        st.sampled_from([seed.FALCON_7B, seed.FALCON_7B_ADAPTERS]),
    )


def _review(obj: Any, op: str, old: Any, uid: str) -> dict[str, Any]:
    review = admission_review(None, operation=op, old=old, uid=uid)
    review["request"]["object"] = obj
    return review


_reviews = st.builds(
    _review,
    _mangled_workspace() | _json_values(),
    st.sampled_from(["CREATE", "UPDATE", "DELETE"]),
    st.none() | _mangled_workspace(),
    st.text(min_size=1, max_size=10),
)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(review=_reviews, path=st.sampled_from(PATHS), encode=st.sampled_from(["json", "gzip"]))
def test_fuzzed_reviews_never_get_a_5xx(
    hook: RunningWebhook, review: dict[str, Any], path: str, encode: str
) -> None:
    body = json.dumps(review).encode()
    headers = {}
    if encode == "gzip":
        body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
    status, answer = _post(hook, path, body, headers)
    if status == 200:
        assert answer["response"]["uid"] == review["request"]["uid"]
        if not answer["response"]["allowed"]:
            assert answer["response"]["status"]["message"]
    else:
        assert 400 <= status < 500
        assert answer["error"]


def test_the_webhook_survives_the_fuzz_with_bounded_memory(hook: RunningWebhook) -> None:
    """After the fuzz above: no internal error, still answering, RSS bounded (the server runs
    in a thread of this process)."""
    for path in PATHS:
        assert hook.metric("kaito_webhook_internal_errors_total", {"endpoint": path[1:]}) == 0
    _assert_healthy(hook)
    grown = _rss_bytes() - RSS_AT_START[0]
    assert grown < 256 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
