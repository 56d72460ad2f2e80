"""Two replicas elect one leader; failover; a deposed leader stops writing; crash safety."""

from __future__ import annotations

import random
import signal
import time

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    StartReconciler,
    apply,
    claims_of,
    get,
    items,
    settle,
    wait_ready,
)
from tests.support.fake_cloud import FakeCloud
from tests.support.procs import wait_until

LEASE = "kaito-reconciler"


def _holder(cp: ControlPlane, namespace: str) -> str:
    lease = get(cp, "lease", namespace, LEASE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def _renamed(text: str, name: str) -> str:
    return text.replace("name: workspace-falcon-7b\n", f"name: {name}\n", 1)


def _leader_gauge(proc: ReconcilerProc) -> float:
    return proc.metrics().get("kaito_reconciler_leader", -1)


def test_two_replicas_elect_one_leader_and_fail_over(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler
) -> None:
    a = start_reconciler(name="a")
    b = start_reconciler(name="b")
    procs = {"a": a, "b": b}
    holder = wait_until(lambda: _holder(crds, namespace), 15, "a Lease holder")
    leader, standby = procs[holder], procs["b" if holder == "a" else "a"]
    wait_until(lambda: _leader_gauge(leader) == 1, 10, "the leader gauge")
    assert _leader_gauge(standby) == 0

    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, "workspace-falcon-7b")
    assert leader.total("kaito_reconciler_writes_total") > 0
    assert standby.total("kaito_reconciler_writes_total") == 0
    assert standby.metrics().get('kaito_reconciler_reconciles_total{result="ok"}', 0) == 0

    leader.kill()  # no chance to release the Lease
    killed_at = time.monotonic()
    apply(crds, namespace, _renamed(examples.SEED_FALCON, "second"))
    wait_until(lambda: _holder(crds, namespace) == standby.identity, 30, "failover")
    took = time.monotonic() - killed_at
    wait_ready(crds, namespace, "second")
    assert standby.total("kaito_reconciler_writes_total") > 0
    print(f"failover after {took:.1f}s (lease duration 3s)")


def test_a_deposed_leader_stops_writing(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler
) -> None:
    a = start_reconciler(name="a")
    wait_until(lambda: _holder(crds, namespace) == "a", 15, "a leads")
    b = start_reconciler(name="b")
    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, "workspace-falcon-7b")

    a.signal(signal.SIGSTOP)  # frozen: cannot renew, cannot write
    wait_until(lambda: _holder(crds, namespace) == "b", 30, "b takes over")
    apply(crds, namespace, _renamed(examples.SEED_FALCON, "second"))
    wait_ready(crds, namespace, "second")

    # a wakes up with a queue full of events; its renew deadline has long passed.
    a.signal(signal.SIGCONT)
    wait_until(lambda: _leader_gauge(a) == 0, 15, "a to notice it lost the Lease")
    writes_a = a.total("kaito_reconciler_writes_total")
    crds.kubectl(
        "patch",
        "workspace",
        "second",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/metadata/annotations/touch", "value": "1"}]',
    )
    settle(2)
    assert a.total("kaito_reconciler_writes_total") == writes_a
    assert _holder(crds, namespace) == "b"
    assert b.alive()


def test_killed_at_random_points_converges_without_duplicates_or_leaks(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, cloud: FakeCloud
) -> None:
    rng = random.Random(20240601)
    cloud.slow(0.5)
    wanted = {
        "workspace-falcon-7b": (examples.SEED_FALCON, 1),
        "adapters": (_renamed(examples.SEED_ADAPTERS, "adapters"), 1),
        "workspace-llama-2-13b": (examples.MULTI_NODE, 2),
    }
    proc = start_reconciler(name="r0")
    for text, _ in wanted.values():
        apply(crds, namespace, text)
    for i in range(6):
        time.sleep(rng.uniform(0.0, 1.2))
        proc.kill()
        proc = start_reconciler(name=f"r{i + 1}")
    for name, (_, count) in wanted.items():
        ws = wait_ready(crds, namespace, name, timeout=90)
        assert len(claims_of(crds, namespace, name)) == count, name
        assert len(ws["status"]["workerNodes"]) == count
        for c in ws["status"]["conditions"]:
            assert c["observedGeneration"] == ws["metadata"]["generation"]
    nodes = items(crds, "nodes", None, f"kaito.sh/workspacenamespace={namespace}")
    assert len(nodes) == 4
    assert len(items(crds, "deployments", namespace)) == 2
    assert len(items(crds, "statefulsets", namespace)) == 1
    assert len(items(crds, "services", namespace)) == 4

    # Delete one Workspace and crash while it is being finalized.
    crds.kubectl("delete", "workspace", "workspace-llama-2-13b", "-n", namespace, "--wait=false")
    for i in range(3):
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()
        proc = start_reconciler(name=f"d{i}")
    wait_until(
        lambda: get(crds, "workspace", namespace, "workspace-llama-2-13b") is None,
        60,
        "the Workspace to be finalized",
    )
    assert claims_of(crds, namespace, "workspace-llama-2-13b") == []
    wait_until(
        lambda: len(items(crds, "nodes", None, f"kaito.sh/workspacenamespace={namespace}")) == 2,
        30,
        "its nodes to go",
    )


def test_sigterm_releases_the_lease_and_the_standby_leads_at_once(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler
) -> None:
    """A rolling update: the leader gets SIGTERM. With a 60 s lease, only a released Lease
    lets the standby lead within the 15 s the test waits."""
    long_lease = ["--lease-duration-s", "60", "--renew-deadline-s", "40"]
    a = start_reconciler(*long_lease, name="a")
    wait_until(lambda: _holder(crds, namespace) == "a", 15, "a leads")
    b = start_reconciler(*long_lease, name="b")
    wait_until(lambda: _leader_gauge(b) == 0, 10, "b to stand by")

    a.stop()  # SIGTERM, waits for the exit
    assert a.popen is not None
    assert a.popen.returncode == 0, a.tail()
    assert _holder(crds, namespace) in ("", "b"), "the Lease still names the stopped leader"
    assert "released lease" in a.log.read_text()
    wait_until(lambda: _holder(crds, namespace) == "b", 15, "the standby to take the Lease")
    wait_until(lambda: _leader_gauge(b) == 1, 10, "the standby to lead")
    apply(crds, namespace, examples.SEED_FALCON)
    wait_ready(crds, namespace, "workspace-falcon-7b")
    assert b.total("kaito_reconciler_writes_total") > 0
