"""Fixtures for the reconciler's cluster tests.

* ``crds`` (session): the Workspace and NodeClaim CRDs on the shared KWOK control plane.
* ``cloud`` (session, reset per test): the fake cloud turning NodeClaims into KWOK GPU nodes.
* ``start_reconciler`` (per test): starts ``python -m reconciler`` processes scoped to the
  test's namespace with short intervals; at the end it deletes the namespace's Workspaces (so
  their NodeClaims go too) while a reconciler still runs, then stops every process.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import ControlPlane
from tests.reconciler.helpers import ReconcilerProc, StartReconciler
from tests.support.fake_cloud import FakeCloud
from tests.support.procs import ROOT

CRD_DIR = ROOT / "manifests" / "crd"


@pytest.fixture(scope="session")
def crds(kwok: ControlPlane) -> ControlPlane:
    kwok.kubectl("apply", "-f", str(CRD_DIR))
    kwok.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workspaces.kaito.sh",
        "crd/nodeclaims.karpenter.sh",
    )
    return kwok


@pytest.fixture(scope="session")
def _cloud(crds: ControlPlane) -> Iterator[FakeCloud]:
    with FakeCloud(crds) as cloud:
        yield cloud


@pytest.fixture
def cloud(_cloud: FakeCloud) -> Iterator[FakeCloud]:
    yield _cloud
    _cloud.failures.clear()
    _cloud.slow(0)


@pytest.fixture
def start_reconciler(
    crds: ControlPlane, cloud: FakeCloud, namespace: str, tmp_path: Path
) -> Iterator[StartReconciler]:
    procs: list[ReconcilerProc] = []

    def start(*args: str, name: str = "", kubeconfig: Path | None = None) -> ReconcilerProc:
        ident = name or f"r{len(procs)}"
        proc = ReconcilerProc(
            crds,
            namespace,
            ["--identity", ident, *args],
            tmp_path / f"reconciler-{ident}.log",
            kubeconfig=kubeconfig,
        )
        proc.identity = ident
        procs.append(proc)
        return proc.start()

    yield start
    # Delete the Workspaces while a reconciler runs, so that NodeClaims and nodes go too.
    try:
        if crds.kubectl("get", "workspaces", "-n", namespace, "-o", "name").stdout.strip():
            for p in procs:
                p.signal(signal.SIGCONT)
            if not any(p.alive() for p in procs):
                start(name="cleanup")
            crds.kubectl(
                "delete", "workspaces", "--all", "-n", namespace, "--timeout=60s", timeout=90
            )
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def reconciler(start_reconciler: StartReconciler) -> ReconcilerProc:
    return start_reconciler()
