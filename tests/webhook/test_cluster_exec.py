"""``python -m webhook`` with a kubeconfig whose user is an ``exec`` credential plugin (the kind
EKS, GKE and AKS hand out), against the real apiserver: its API client and its certificate
manager share one client, so the plugin runs once; a failing plugin stops the process with a
message naming the kubeconfig, the user and the fix."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api import seed
from tests.cluster.harness import ControlPlane, free_port
from tests.support.kubeconfigs import (
    assert_a_failing_plugin_stops,
    exec_admin_kubeconfig,
    exec_runs,
)
from tests.support.procs import wait_until
from tests.webhook.cluster_support import ROOT, install_crds, webhook_in_force


@pytest.fixture
def exec_kubeconfig(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Path]:
    with exec_admin_kubeconfig(control_plane, namespace, tmp_path) as kc:
        yield kc


def test_the_webhook_and_its_certificate_manager_share_one_exec_authenticated_client(
    control_plane: ControlPlane, namespace: str, exec_kubeconfig: Path, tmp_path: Path
) -> None:
    cp = control_plane
    install_crds(cp)
    name = f"kaito-exec-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KAITO_CERTS_NAMESPACE": namespace}
    cmd = [
        sys.executable, "-m", "webhook", "--kubeconfig", str(exec_kubeconfig),
        "--host", "127.0.0.1", "--port", str(free_port()), "--register", "--webhook-name", name,
        "--config-namespace", namespace,
    ]  # fmt: skip
    log_path = tmp_path / "webhook.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:

            def registered() -> bool:
                out = cp.kubectl("get", "validatingwebhookconfiguration", name, check=False)
                return proc.poll() is not None or out.returncode == 0

            wait_until(registered, 60)
            assert proc.poll() is None, log_path.read_text()
            # The certificate manager wrote the Secret and injected its CA ...
            secret = cp.kubectl_json("get", "secret", "kaito-webhook-certs", "-n", namespace)
            config = cp.kubectl_json("get", "validatingwebhookconfiguration", name)
            bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
            assert base64.b64decode(bundle) == base64.b64decode(secret["data"]["ca.crt"])
            # ... and the webhook, registered and reading the admin ConfigMap through the same
            # client, is in force.
            wait_until(lambda: webhook_in_force(cp, namespace, seed.FALCON_7B_ADAPTERS), 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code == 0, log_path.read_text()
    assert exec_runs(tmp_path / "plugin") == 1  # one client in the process
    assert cp.kubectl("get", "validatingwebhookconfiguration", name, check=False).returncode != 0


def test_a_failing_exec_plugin_stops_the_webhook_with_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "KAITO_CERTS_NAMESPACE": "default"}
    assert_a_failing_plugin_stops(tmp_path, ["webhook", "--port", str(free_port())], env, ROOT)
