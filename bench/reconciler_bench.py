"""Reconciler benchmark: N Workspaces on fake GPU nodes, from create to InferenceReady.

For each N: a fresh control plane from ``tests/cluster`` (kube-apiserver, etcd,
kube-controller-manager, kube-scheduler, KWOK), the CRDs, the test-only fake cloud (NodeClaims
become KWOK GPU nodes) and ``python -m reconciler`` with its default settings (30 s relist,
leader election on). N Workspaces (the seed's first example under N names: one
Standard_NC6s_v3 NodeClaim, node, Deployment, Service and Pod each) are created at once; the
script measures the time until every Deployment exists and until every Workspace is
InferenceReady, the reconciler's peak RSS, and then, idle, the API requests per minute (the
reconciler's own counters, and the apiserver's ``apiserver_request_total`` for Workspaces,
which only the reconciler reads).

    python bench/reconciler_bench.py --counts 100 500 --json bench/reconciler_results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reconciler.kube import Kube, load_kubeconfig  # noqa: E402
from reconciler.resources import DEPLOYMENTS, NODECLAIMS, NODES, WORKSPACES  # noqa: E402
from tests.cluster.harness import ANNOTATION_FAKE_NODE, ControlPlane  # noqa: E402
from tests.support.fake_cloud import FakeCloud  # noqa: E402
from tests.support.procs import die_with_parent, free_port  # noqa: E402

NAMESPACE = "bench"


def workspace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "resource": {
            "instanceType": "Standard_NC6s_v3",
            "labelSelector": {"matchLabels": {"apps": "falcon-7b"}},
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def start_kwok_with_node_leases(cp: ControlPlane) -> None:
    """KWOK as the harness starts it, but heartbeating through node Leases: with hundreds of
    fake nodes on two busy cores, status heartbeats fall behind, the node lifecycle controller
    marks nodes NotReady, and KWOK never makes their Pods Ready again."""
    assert cp.binaries is not None
    # The harness's process spawner: KWOK dies with us and logs in cp.dir.
    cp.spawn(
        "kwok",
        [
            str(cp.binaries.kwok),
            f"--kubeconfig={cp.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={ANNOTATION_FAKE_NODE}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{free_port()}",
        ],
    )
    time.sleep(0.5)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def reconciler_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return samples(r.read().decode())


def diff_by(
    before: dict[Any, float],
    after: dict[Any, float],
    name: str,
    keys: tuple[str, ...],
    where: dict[str, str] | None = None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), value in after.items():
        if n != name:
            continue
        d = dict(labels)
        if where and any(d.get(k) != v for k, v in where.items()):
            continue
        key = " ".join(d.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + value - before.get((n, labels), 0.0)
    return {k: v for k, v in sorted(out.items()) if v}


async def create_all(cp: ControlPlane, n: int) -> None:
    async with Kube(load_kubeconfig(cp.kubeconfig), field_manager="bench") as kube:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await kube.create(workspace(f"ws-{i:04d}"))

        await asyncio.gather(*(one(i) for i in range(n)))


async def progress(cp: ControlPlane) -> tuple[int, int, int, int]:
    """NodeClaims, Ready nodes, Deployments and InferenceReady Workspaces."""
    async with Kube(load_kubeconfig(cp.kubeconfig), field_manager="bench") as kube:
        claims = await kube.list(NODECLAIMS)
        nodes = await kube.list(NODES)
        deps = await kube.list(DEPLOYMENTS, NAMESPACE)
        wss = await kube.list(WORKSPACES, NAMESPACE)
    ready_nodes = sum(
        1
        for n in nodes.items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (n.get("status") or {}).get("conditions") or []
        )
    )
    ready = sum(
        1
        for w in wss.items
        if any(
            c.get("type") == "InferenceReady" and c.get("status") == "True"
            for c in (w.get("status") or {}).get("conditions") or []
        )
    )
    return len(claims.items), ready_nodes, len(deps.items), ready


def run(n: int, idle_s: float, timeout_s: float) -> dict[str, Any]:
    with ControlPlane() as cp:
        cp.start_controllers()
        start_kwok_with_node_leases(cp)
        cp.kubectl("apply", "-f", str(REPO / "manifests" / "crd"))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workspaces.kaito.sh",
            "crd/nodeclaims.karpenter.sh",
        )
        cp.kubectl("create", "namespace", NAMESPACE)
        with FakeCloud(cp):
            port = free_port()
            log = open(cp.dir / "logs" / "reconciler.log", "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "--kubeconfig",
                    str(cp.kubeconfig),
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(port),
                    "--lease-namespace",
                    "default",
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - only a prctl call
            )
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status == 200:
                                break
                    except OSError:
                        time.sleep(0.2)
                time.sleep(1)  # the Lease
                base_rss = rss_kib(proc.pid, "VmRSS")
                t0 = time.monotonic()
                asyncio.run(create_all(cp, n))
                t_submitted = time.monotonic() - t0
                t_claims = t_nodes = t_created = t_ready = None
                while time.monotonic() - t0 < timeout_s:
                    claims, nodes, created, ready = asyncio.run(progress(cp))
                    now = time.monotonic() - t0
                    if t_claims is None and claims >= n:
                        t_claims = now
                    if t_nodes is None and nodes >= n:
                        t_nodes = now
                    if t_created is None and created >= n:
                        t_created = now
                    if ready >= n:
                        t_ready = now
                        break
                    time.sleep(0.5)
                time.sleep(5)
                before = reconciler_metrics(port)
                api_before = samples(cp.get("/metrics")[1].decode())
                time.sleep(idle_s)
                after = reconciler_metrics(port)
                api_after = samples(cp.get("/metrics")[1].decode())
                per_min = 60.0 / idle_s
                idle = {
                    k: round(v * per_min, 1)
                    for k, v in diff_by(
                        before, after, "kaito_reconciler_api_requests_total", ("verb", "resource")
                    ).items()
                }
                writes_idle = diff_by(
                    before, after, "kaito_reconciler_writes_total", ("kind", "op")
                )
                api_ws = {
                    k: round(v * per_min, 1)
                    for k, v in diff_by(
                        api_before,
                        api_after,
                        "apiserver_request_total",
                        ("verb",),
                        {"resource": "workspaces"},
                    ).items()
                }
                totals = diff_by({}, after, "kaito_reconciler_writes_total", ("kind", "op"))
                reconciles = diff_by({}, after, "kaito_reconciler_reconciles_total", ("result",))
                result = {
                    "workspaces": n,
                    "submit_s": round(t_submitted, 1),
                    "all_nodeclaims_created_s": None if t_claims is None else round(t_claims, 1),
                    "all_nodes_ready_s": None if t_nodes is None else round(t_nodes, 1),
                    "all_workloads_created_s": None if t_created is None else round(t_created, 1),
                    "all_inference_ready_s": None if t_ready is None else round(t_ready, 1),
                    "reconciler_rss_idle_start_mib": round(base_rss / 1024, 1),
                    "reconciler_peak_rss_mib": round(rss_kib(proc.pid, "VmHWM") / 1024, 1),
                    "reconciler_rss_end_mib": round(rss_kib(proc.pid, "VmRSS") / 1024, 1),
                    "idle_requests_per_min_by_verb_resource": idle,
                    "idle_requests_per_min_total": round(sum(idle.values()), 1),
                    "idle_requests_per_min_excluding_lease": round(
                        sum(v for k, v in idle.items() if "leases" not in k), 1
                    ),
                    "idle_writes": writes_idle,
                    "apiserver_workspace_requests_per_min_idle": api_ws,
                    "writes_total": totals,
                    "reconciles_total": reconciles,
                }
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[100, 500])
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = []
    for n in args.counts:
        print(f"--- {n} Workspaces", flush=True)
        res = run(n, args.idle_seconds, args.timeout)
        print(json.dumps(res, indent=2), flush=True)
        results.append(res)
    if args.json:
        load = os.getloadavg()
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "loadavg_at_end": [round(x, 2) for x in load],
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
