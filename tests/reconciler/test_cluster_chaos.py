"""Chaos: two replicas, killed (SIGKILL) or rolled (SIGTERM) at random points while Workspaces
are created, updated and deleted. Bounded: a few Workspaces, six disruptions, 3 s leases.

Asserts: one NodeClaim per Workspace and no leak (no claim or node of a deleted Workspace),
never two holders, failover after a kill within a few lease durations, and after SIGTERM the
Lease released at once (empty or already the standby's the moment the old leader has exited).
"""

from __future__ import annotations

import random
import signal
from typing import Any

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import (
    ReconcilerProc,
    StartReconciler,
    apply,
    claims_of,
    get,
    items,
    wait_ready,
)
from tests.support.fake_cloud import FakeCloud
from tests.support.procs import wait_until

LEASE = "kaito-reconciler"
LEASE_S = 3.0  # tests/reconciler/helpers.FAST


def _holder(cp: ControlPlane, namespace: str) -> str:
    lease = get(cp, "lease", namespace, LEASE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def _workspace(name: str, strength: str) -> str:
    """The seed's adapter example renamed; an update changes the adapter's strength (a new
    Pod template: a rollout)."""
    text = examples.SEED_ADAPTERS.replace("name: workspace-falcon-7b\n", f"name: {name}\n", 1)
    assert 'strength: "0.2"' in text
    return text.replace('strength: "0.2"', f'strength: "{strength}"')


def test_replicas_killed_and_rolled_during_creates_updates_and_deletes(
    crds: ControlPlane, namespace: str, start_reconciler: StartReconciler, cloud: FakeCloud
) -> None:
    rng = random.Random(14)
    cloud.slow(0.5)
    replicas: dict[str, ReconcilerProc] = {}
    serial = 0
    live: dict[str, str] = {}  # Workspace name -> manifest
    deleted: list[str] = []

    def start() -> None:
        nonlocal serial
        serial += 1
        proc = start_reconciler(name=f"r{serial}")
        replicas[proc.identity] = proc

    start()
    start()
    for name in ("ws-a", "ws-b", "ws-c"):
        live[name] = _workspace(name, strength="0.2")
        apply(crds, namespace, live[name])
    leader = wait_until(lambda: _holder(crds, namespace), 15, "a leader")
    assert leader in replicas

    def change(step: int) -> None:
        """One create, update or delete, chosen at random (creates while there are few)."""
        action = rng.choice(["create", "create", "update", "delete"] if live else ["create"])
        if action == "create" or len(live) < 2:
            name = f"ws-{step}"
            live[name] = _workspace(name, strength=rng.choice(["0.2", "0.3"]))
            apply(crds, namespace, live[name])
        elif action == "update":
            name = rng.choice(sorted(live))
            live[name] = _workspace(name, strength=rng.choice(["0.4", "0.6", "0.9"]))
            apply(crds, namespace, live[name])
        else:
            name = rng.choice(sorted(live))
            del live[name]
            deleted.append(name)
            crds.kubectl("delete", "workspace", name, "-n", namespace, "--wait=false")

    rollouts = 0
    for step in range(6):
        change(step)
        holder = _holder(crds, namespace)
        victim_id = (
            holder if holder in replicas and rng.random() < 0.75 else rng.choice(sorted(replicas))
        )
        victim = replicas.pop(victim_id)
        was_leader = victim_id == holder
        if rng.random() < 0.5:
            start()  # a rollout: the new replica first, then SIGTERM to the old one
            victim.stop()
            rollouts += 1
            assert victim.popen is not None
            assert victim.popen.returncode == 0, victim.tail()
            if was_leader:
                # Released on the way out: no holder, or already the standby.
                assert _holder(crds, namespace) in ("", *replicas), victim.tail()
        else:
            victim.signal(signal.SIGKILL)
            assert victim.popen is not None
            victim.popen.wait(10)
            start()
        new = wait_until(
            lambda: (h := _holder(crds, namespace)) in replicas and h,
            4 * LEASE_S,
            "a live replica to hold the Lease",
        )
        leading = [p for p in replicas.values() if p.metrics().get("kaito_reconciler_leader") == 1]
        assert len(leading) <= 1, [p.identity for p in leading]
        assert new in replicas
    assert rollouts > 0

    for name in sorted(live):
        try:
            ws: dict[str, Any] = wait_ready(crds, namespace, name, timeout=90)
        except AssertionError as exc:
            pods = crds.kubectl("get", "pods,nodes", "-o", "wide", "-n", namespace).stdout
            raise AssertionError(f"{exc}\n{pods}") from None
        assert len(claims_of(crds, namespace, name)) == 1, name
        assert len(ws["status"]["workerNodes"]) == 1, name
    for name in deleted:
        wait_until(
            lambda n=name: get(crds, "workspace", namespace, n) is None,
            60,
            f"{name} to be finalized",
        )
        assert claims_of(crds, namespace, name) == [], name
    wait_until(
        lambda: (
            len(items(crds, "nodes", None, f"kaito.sh/workspacenamespace={namespace}")) == len(live)
        ),
        60,
        "one node per remaining Workspace",
    )
    assert len(items(crds, "nodeclaims", None, f"kaito.sh/workspacenamespace={namespace}")) == len(
        live
    )
    print(f"chaos: {len(live)} Workspaces left, {len(deleted)} deleted, {rollouts} rollouts")
