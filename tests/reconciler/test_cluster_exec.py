"""``python -m reconciler`` with a kubeconfig whose user is an ``exec`` credential plugin (the
kind EKS, GKE and AKS hand out): it runs a Workspace to Ready against the real apiserver, and a
failing plugin stops it with a message naming the kubeconfig, the user and the fix."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import ControlPlane
from tests.reconciler import examples
from tests.reconciler.helpers import StartReconciler, apply, wait_ready
from tests.support.kubeconfigs import (
    assert_a_failing_plugin_stops,
    exec_admin_kubeconfig,
    exec_runs,
)
from tests.support.procs import ROOT


@pytest.fixture
def exec_kubeconfig(crds: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """Set up before ``start_reconciler``, so torn down after it: the reconciler keeps its
    rights while the Workspaces are deleted."""
    with exec_admin_kubeconfig(crds, namespace, tmp_path) as kc:
        yield kc


def test_the_reconciler_runs_a_workspace_with_an_exec_plugin(
    crds: ControlPlane,
    namespace: str,
    exec_kubeconfig: Path,
    start_reconciler: StartReconciler,
    tmp_path: Path,
) -> None:
    start_reconciler(kubeconfig=exec_kubeconfig)
    apply(crds, namespace, examples.SEEDS["falcon-vllm"])
    ws = wait_ready(crds, namespace, "workspace-falcon-7b")
    assert ws["status"]["workerNodes"]  # its NodeClaim's node, made by the reconciler
    assert exec_runs(tmp_path / "plugin") == 1


def test_a_failing_exec_plugin_stops_the_reconciler_with_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RECONCILER_")}
    assert_a_failing_plugin_stops(tmp_path, ["reconciler", "--metrics-port", "0"], env, ROOT)
