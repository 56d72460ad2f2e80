"""Workspace create latency through a real kube-apiserver, with and without the webhooks.

    python bench/webhook_bench.py [--rate 20] [--seconds 15] [--rounds 2] [--json out.json]

Starts its own control plane (tests/cluster), installs the CRDs, then alternates rounds:
``off`` (no admission webhooks) and ``on`` (``python -m webhook --register`` in its own process,
mutating and validating webhooks by URL on 127.0.0.1). Each round creates Workspaces (the seed's
third example with a real image) at a steady rate from one client and records each create's
latency. It also reports the webhook's own latency: its server-side histogram (time from reading
the request to writing the answer) and direct HTTPS calls to /mutate and /validate with a
keep-alive client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 3),
        "p90_ms": round(pct(ms, 0.90), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def create_round(api: Any, namespace: str, rate: float, seconds: float, tag: str) -> list[float]:
    from kubernetes import client

    from tests.api import seed

    body = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
    latencies: list[float] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body["metadata"]["name"] = f"{tag}-{i}"
        t0 = time.perf_counter()
        try:
            api.create_namespaced_custom_object(
                "kaito.sh", "v1alpha1", namespace, "workspaces", body
            )
        except client.ApiException as exc:
            raise SystemExit(f"create failed in round {tag}: {exc.status} {exc.body}") from exc
        latencies.append(time.perf_counter() - t0)
    return latencies


def histogram_quantiles(metrics_text: str, endpoint: str) -> dict[str, float]:
    """p50/p99 (ms) of kaito_webhook_request_duration_seconds, by linear interpolation."""
    buckets: list[tuple[float, float]] = []
    pattern = re.compile(
        "kaito_webhook_request_duration_seconds_bucket"
        + re.escape(f'{{endpoint="{endpoint}",le="')
        + r'([^"]+)"\} (\S+)'
    )
    for le, count in pattern.findall(metrics_text):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(count)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {"n": total}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        target = q * total
        prev_le, prev_count = 0.0, 0.0
        value = float("nan")
        for le, count in buckets:
            if count >= target:
                if le == float("inf"):
                    value = prev_le
                else:
                    frac = (
                        0.0 if count == prev_count else (target - prev_count) / (count - prev_count)
                    )
                    value = prev_le + (le - prev_le) * frac
                break
            prev_le, prev_count = le, count
        out[name] = round(value * 1000, 3)
    return out


def direct_calls(port: int, ca_pem: bytes, n: int) -> dict[str, dict[str, float]]:
    from api.defaults import default
    from tests.api import seed
    from tests.webhook.support import admission_review

    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    obj = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
    out = {}
    for path, body_obj in (("/mutate", obj), ("/validate", default(obj))):
        body = json.dumps(admission_review(body_obj)).encode()
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            times.append(time.perf_counter() - t0)
            assert resp.status == 200
        conn.close()
        out[path] = summary(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/webhook_bench.py", description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=2, help="off/on round pairs")
    parser.add_argument("--direct", type=int, default=1000, help="direct calls per endpoint")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from kubernetes import client

    from tests.cluster.harness import ControlPlane
    from tests.support.procs import free_port, wait_until
    from tests.webhook.cluster_support import install_crds
    from tests.webhook.support import make_pki

    results: dict[str, Any] = {
        "rate_per_s": args.rate,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
    }
    with ControlPlane() as cp, tempfile.TemporaryDirectory() as tmp:
        install_crds(cp)
        cp.kubectl("create", "namespace", "bench")
        api = client.CustomObjectsApi(cp.api_client())
        pki = make_pki(Path(tmp))
        port = free_port()
        name = f"kaito-bench-{uuid.uuid4().hex[:6]}"
        lat: dict[str, list[float]] = {"off": [], "null": [], "on": []}
        metrics_text = ""
        direct: dict[str, Any] = {}
        log_dir = Path(tmp)

        def registered(present: bool) -> None:
            def check() -> bool:
                rc = cp.kubectl("get", "validatingwebhookconfiguration", name, check=False)
                return (rc.returncode == 0) == present

            wait_until(check, 60)
            time.sleep(2)  # the apiserver's webhook informer catches up

        def register_null() -> None:
            from webhook import registration

            for obj in registration.url_configurations(name, "127.0.0.1", port, pki.ca_pem):
                cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))

        def unregister_null() -> None:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                cp.kubectl("delete", kind, name, check=False)

        create_round(api, "bench", args.rate, 2, "warm-off")
        for r in range(args.rounds):
            lat["off"] += create_round(api, "bench", args.rate, args.seconds, f"off{r}")
            for mode in ("null", "on"):
                log = (log_dir / f"{mode}{r}.log").open("w")
                if mode == "null":
                    cmd = [sys.executable, str(ROOT / "bench" / "webhook_null.py"), str(port),
                           str(pki.cert_file), str(pki.key_file)]  # fmt: skip
                else:
                    cmd = [
                        sys.executable, "-m", "webhook", "--kubeconfig", str(cp.kubeconfig),
                        "--host", "127.0.0.1", "--port", str(port),
                        "--tls-cert-file", str(pki.cert_file), "--tls-key-file", str(pki.key_file),
                        "--ca-file", str(pki.ca_file), "--register", "--webhook-name", name,
                        "--config-namespace", "bench", "--log-level", "WARNING",
                    ]  # fmt: skip
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                try:
                    if mode == "null":
                        time.sleep(1.5)
                        register_null()
                    registered(True)
                    create_round(api, "bench", args.rate, 2, f"warm-{mode}{r}")
                    lat[mode] += create_round(api, "bench", args.rate, args.seconds, f"{mode}{r}")
                    if mode == "on":
                        ctx = ssl.create_default_context(cadata=pki.ca_pem.decode())
                        conn = http.client.HTTPSConnection(
                            "127.0.0.1", port, context=ctx, timeout=10
                        )
                        conn.request("GET", "/metrics")
                        metrics_text = conn.getresponse().read().decode()
                        conn.close()
                        if r == args.rounds - 1:
                            direct = direct_calls(port, pki.ca_pem, args.direct)
                finally:
                    if mode == "null":
                        unregister_null()
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                    log.close()
                registered(False)
        off, on = lat["off"], lat["on"]
        results["create_with_null_webhooks"] = summary(lat["null"])
        results["create_without_webhooks"] = summary(off)
        results["create_with_webhooks"] = summary(on)
        keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
        base = results["create_without_webhooks"]
        results["added_ms"] = {
            k: round(results["create_with_webhooks"][k] - base[k], 3) for k in keys
        }
        results["added_by_null_webhooks_ms"] = {
            k: round(results["create_with_null_webhooks"][k] - base[k], 3) for k in keys
        }
        results["kaito_over_null_ms"] = {
            k: round(
                results["create_with_webhooks"][k] - results["create_with_null_webhooks"][k], 3
            )
            for k in keys
        }
        results["load_average_1m_at_end"] = os.getloadavg()[0]
        results["webhook_server_side_last_round"] = {
            ep: histogram_quantiles(metrics_text, ep) for ep in ("mutate", "validate")
        }
        results["webhook_direct_https_keepalive"] = direct
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
