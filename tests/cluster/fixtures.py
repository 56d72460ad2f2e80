"""Pytest fixtures for the real control plane (registered by ``tests/conftest.py``).

- ``control_plane``: etcd + kube-apiserver (session-wide); a ``ControlPlane``.
- ``controllers``: the same, plus kube-controller-manager and kube-scheduler.
- ``kwok``: the same, plus controllers and KWOK, so Pods on fake nodes become Ready.
- ``namespace``: a fresh namespace per test, deleted afterwards.
- ``real_cluster``: a separate control plane on 10.86.0.1 with controllers, KWOK and a real node
  (containerd + kubelet + kube-proxy; see ``realnode.py``); a ``RealCluster``. Root only: it
  skips, naming what is missing, where the host cannot run a node.
- ``gpu_nodes``: a factory ``gpu_nodes(name, instance_type, **kw)`` creating fake GPU nodes
  (see ``nodes.fake_gpu_node``) that are deleted after the test.

Tests that use any of them are marked ``cluster`` automatically.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import hostprep
from .harness import ControlPlane
from .nodes import create_fake_gpu_node, wait_node_ready
from .realnode import RealCluster

CLUSTER_FIXTURES = {
    "control_plane",
    "controllers",
    "kwok",
    "namespace",
    "gpu_nodes",
    "real_cluster",
}


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so fixture teardown stops every process.
    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _term)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
        # One rule for `slow` (what `make test-fast` skips): a test that starts a control plane,
        # builds images or starts a real node is slow, marked or not.
        heavy = ("cluster", "images", "real_node_first")
        if any(item.get_closest_marker(m) for m in heavy) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    # Tests that start their own real node (marked `real_node_first`) run before the session's
    # `real_cluster` exists: only one real node fits on a machine.
    items.sort(key=lambda item: item.get_closest_marker("real_node_first") is None)


def real_node_skip_reason() -> str | None:
    """Why this host cannot run a real node (after installing what can be installed)."""
    try:
        hostprep.ensure()
    except hostprep.HostPrepError as exc:
        return f"no real node on this host: {exc}"
    return None


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[RealCluster]:
    reason = real_node_skip_reason()
    if reason:
        pytest.skip(reason)
    rc = RealCluster()
    rc.start()
    try:
        yield rc
    finally:
        rc.stop()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane()
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def controllers(control_plane: ControlPlane) -> ControlPlane:
    if not any(p.name == "kube-controller-manager" for p in control_plane.procs):
        control_plane.start_controllers()
    return control_plane


@pytest.fixture(scope="session")
def kwok(controllers: ControlPlane) -> ControlPlane:
    if not any(p.name == "kwok" for p in controllers.procs):
        controllers.start_kwok()
    return controllers


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def gpu_nodes(kwok: ControlPlane) -> Iterator[Callable[..., dict[str, Any]]]:
    made: list[str] = []

    def make(name: str, instance_type: str, *, wait: bool = True, **kw: Any) -> dict[str, Any]:
        create_fake_gpu_node(kwok, name, instance_type, **kw)
        made.append(name)
        return wait_node_ready(kwok, name) if wait else kwok.kubectl_json("get", "node", name)

    yield make
    if made:
        kwok.kubectl("delete", "node", *made, "--wait=false", check=False)
