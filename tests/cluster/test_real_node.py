"""The real node: Pods really run, Services really route, and nothing is left afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from . import binaries as bins
from . import busybox_image, realnode
from .fixtures import real_node_skip_reason
from .harness import ControlPlane
from .nodes import GPU_RESOURCE, LABEL_INSTANCE_TYPE
from .realnode import NODE_IP, NODE_NAME, RealCluster, wait_pod_ready

REPO = Path(__file__).resolve().parents[2]


def web_pod(namespace: str, name: str, text: str) -> dict[str, Any]:
    """A busybox httpd Pod asking for a GPU, so only the real node can take it."""
    script = (
        f"mkdir -p /www && echo {text} > /www/index.html && echo serving {text} && "
        "exec httpd -f -p 8080 -h /www"
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kaito-py/real-node": "true"},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": busybox_image.REF,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                    "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {GPU_RESOURCE: "1"}},
                }
            ],
        },
    }


def service(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def get_until(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return str(r.read().decode())
        except OSError as exc:
            err = exc
            time.sleep(0.5)
    raise AssertionError(f"GET {url} failed for {timeout}s: {err}")


def test_node_is_a_gpu_node_of_an_instance_type(real_cluster: RealCluster) -> None:
    node = real_cluster.control_plane.kubectl_json("get", "node", NODE_NAME)
    assert node["metadata"]["labels"][LABEL_INSTANCE_TYPE] == real_cluster.instance_type
    assert node["status"]["allocatable"][GPU_RESOURCE] == str(real_cluster.gpus)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})


def test_pod_runs_and_serves_through_its_cluster_ip(real_cluster: RealCluster) -> None:
    cp = real_cluster.control_plane
    ns = "real-web"
    cp.kubectl("create", "namespace", ns)
    try:
        cp.kubectl("apply", "-f", "-", input=json.dumps(web_pod(ns, "web", "hello-real-node")))
        cp.kubectl("apply", "-f", "-", input=json.dumps(service(ns, "web")))
        pod = wait_pod_ready(cp, ns, "web")
        assert pod["spec"]["nodeName"] == NODE_NAME
        ip = cp.kubectl_json("get", "service", "-n", ns, "web")["spec"]["clusterIP"]
        # Host -> ClusterIP (kube-proxy) -> Pod IP (CNI bridge).
        assert get_until(f"http://{ip}/").strip() == "hello-real-node"
        # The apiserver reaches the kubelet on the node IP: logs and exec.
        assert "serving hello-real-node" in cp.kubectl("logs", "-n", ns, "web").stdout
        out = cp.kubectl("exec", "-n", ns, "web", "--", "cat", "/www/index.html").stdout
        assert out.strip() == "hello-real-node"
        # The Pod reaches the apiserver through the `kubernetes` Service (not loopback).
        version = cp.kubectl(
            "exec",
            "-n",
            ns,
            "web",
            "--",
            "wget",
            "-q",
            "-O-",
            "--no-check-certificate",
            "https://10.96.0.1/version",
        ).stdout
        assert json.loads(version)["gitVersion"].startswith("v1.34")
    finally:
        cp.kubectl(
            "delete", "namespace", ns, "--wait=true", "--timeout=90s", check=False, timeout=120
        )


def test_second_real_node_is_refused_with_a_clear_message(real_cluster: RealCluster) -> None:
    with (
        pytest.raises(realnode.NodeError, match="another real node is running"),
        realnode.machine_lock(),
    ):
        pass


@pytest.mark.real_node_first
@pytest.mark.cluster
def test_clean_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    reason = real_node_skip_reason()
    if reason:
        pytest.skip(reason)
    assert realnode.leftovers() == [], "debris from before this test"
    work = tmp_path / "cluster"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.cluster",
            "up",
            "--real-node",
            "--nodes",
            "0",
            f"--workdir={work}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "running; press Ctrl-C" in line:
                break
        else:
            raise AssertionError("harness ended early:\n" + "".join(lines[-60:]))
        cp = ControlPlane(workdir=work, binaries=bins.binaries())  # kubectl on the running one
        cp.kubectl("apply", "-f", "-", input=json.dumps(web_pod("default", "left", "x")))
        wait_pod_ready(cp, "default", "left")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        time.sleep(1)
        left = realnode.leftovers()
        assert any(item.startswith("process") for item in left), left  # the shims live on
        assert any(item.startswith("mount") for item in left), left
        assert f"address {NODE_IP} on lo" in left
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        proc.stdout.close()
        out = subprocess.run(
            [sys.executable, "-m", "tests.cluster", "clean"],
            cwd=REPO,
            check=False,
            capture_output=True,
            text=True,
        )
    assert out.returncode == 0, out.stderr
    assert realnode.leftovers() == []
