"""Smoke tests proving the harness: a real apiserver, CRDs, Deployments on fake GPU nodes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import WaitTimeout, wait_until

from .binaries import KUBERNETES_VERSION
from .harness import ControlPlane

REPO = Path(__file__).resolve().parents[2]


def test_apiserver_reports_pinned_version(control_plane: ControlPlane) -> None:
    status, body = control_plane.get("/version")
    assert status == 200
    info = json.loads(body)
    assert info["gitVersion"] == KUBERNETES_VERSION
    assert info["gitVersion"].startswith("v1.34.")
    out = control_plane.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_crd_becomes_established(control_plane: ControlPlane) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.kaito.test"},
        "spec": {
            "group": "smoke.kaito.test",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"size": {"type": "integer", "minimum": 1}},
                        }
                    },
                }
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(crd))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.kaito.test", "--timeout=60s"
    )
    # The schema is enforced by the apiserver: a bad value is refused.
    bad = {"apiVersion": "smoke.kaito.test/v1", "kind": "Widget", "metadata": {"name": "w"}}
    bad["size"] = 0  # type: ignore[assignment]
    res = control_plane.kubectl(
        "apply", "-n", "default", "-f", "-", input=json.dumps(bad), check=False
    )
    assert res.returncode != 0
    assert "size" in res.stderr


def _gpu_deployment(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.example/fake:1",
                            "resources": {
                                "requests": {"nvidia.com/gpu": str(gpus)},
                                "limits": {"nvidia.com/gpu": str(gpus)},
                            },
                        }
                    ]
                },
            },
        },
    }


def test_deployment_with_gpu_requests_gets_ready_pods_on_fake_gpu_node(
    kwok: ControlPlane, namespace: str, gpu_nodes: Callable[..., dict[str, Any]]
) -> None:
    node = gpu_nodes(f"gpu-{namespace}", "Standard_NC12s_v3", gpus=2, labels={"apps": "falcon-7b"})
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
    dep = _gpu_deployment("serve", gpus=2)
    kwok.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))
    kwok.kubectl(
        "rollout", "status", "deployment/serve", "-n", namespace, "--timeout=90s", timeout=100
    )
    pods = kwok.kubectl_json("get", "pods", "-n", namespace, "-l", "app=serve")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == f"gpu-{namespace}"
    assert pod["status"]["phase"] == "Running"
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_pod_asking_more_gpus_than_any_node_stays_pending_unschedulable(
    kwok: ControlPlane, namespace: str, gpu_nodes: Callable[..., dict[str, Any]]
) -> None:
    gpu_nodes(f"small-{namespace}", "Standard_NC6s_v3", gpus=1)
    dep = _gpu_deployment("toobig", gpus=64)
    kwok.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))

    # The scheduler may first see the new node still tainted not-ready ("untolerated taint");
    # once the node controller lifts that taint it retries and names the GPUs.
    said: list[str] = []

    def unschedulable() -> dict[str, Any] | None:
        pods = kwok.kubectl_json("get", "pods", "-n", namespace, "-l", "app=toobig")["items"]
        for pod in pods:
            for c in pod.get("status", {}).get("conditions", []):
                if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable":
                    said.append(c.get("message", ""))
                    if "Insufficient nvidia.com/gpu" in said[-1]:
                        return dict(pod)
        return None

    try:
        pod = wait_until(unschedulable, 90, "a Pod Unschedulable for want of nvidia.com/gpu")
    except WaitTimeout:
        raise AssertionError(f"the scheduler never named the GPUs; it said {said[-1:]}") from None
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def _port_open(url: str) -> bool:
    host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_stop_leaves_no_process_and_no_port() -> None:
    cp = ControlPlane()
    cp.start()
    pids = [p.popen.pid for p in cp.procs]
    urls = [cp.server, cp.etcd_url]
    workdir = cp.dir
    assert all(_port_open(u) for u in urls)
    cp.stop()
    assert not any(_pid_alive(p) for p in pids)
    assert not any(_port_open(u) for u in urls)
    assert not workdir.exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_runner_takes_its_processes_along(sig: signal.Signals) -> None:
    """Even when the process that started the cluster is killed, nothing is left behind."""
    script = textwrap.dedent(
        """
        import json, signal, sys, time
        from tests.cluster.harness import ControlPlane
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        cp = ControlPlane()
        cp.start()
        print(json.dumps({"pids": [p.popen.pid for p in cp.procs],
                          "urls": [cp.server, cp.etcd_url]}), flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        assert all(_pid_alive(p) for p in info["pids"])
        child.send_signal(sig)
        child.wait(60)
    wait_until(lambda: not any(_pid_alive(p) for p in info["pids"]), 30, "children to exit")
    wait_until(lambda: not any(_port_open(u) for u in info["urls"]), 30, "ports to close")
