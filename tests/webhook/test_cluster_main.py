"""``python -m webhook --register`` against a real apiserver: the documented out-of-cluster
mode (the same code as in-cluster) registers itself by URL and removes itself on exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.api import seed
from tests.cluster.harness import ControlPlane, free_port
from tests.webhook.cluster_support import ROOT, apply, install_crds, wait_until, webhook_in_force
from tests.webhook.support import make_pki


def test_out_of_cluster_mode_registers_and_deregisters(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    install_crds(cp)
    pki = make_pki(tmp_path)
    name = f"kaito-main-{uuid.uuid4().hex[:6]}"
    cmd = [
        sys.executable, "-m", "webhook",
        "--kubeconfig", str(cp.kubeconfig),
        "--host", "127.0.0.1", "--port", str(free_port()),
        "--tls-cert-file", str(pki.cert_file), "--tls-key-file", str(pki.key_file),
        "--ca-file", str(pki.ca_file),
        "--register", "--webhook-name", name,
        "--config-namespace", namespace, "--config-poll-seconds", "0.2",
    ]  # fmt: skip
    log = (tmp_path / "webhook.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:

        def registered() -> bool:
            out = cp.kubectl(
                "get", "validatingwebhookconfiguration", name, "-o", "json", check=False
            )
            return out.returncode == 0

        wait_until(lambda: registered() or proc.poll() is not None, 60)
        assert proc.poll() is None, (tmp_path / "webhook.log").read_text()
        config = cp.kubectl_json("get", "mutatingwebhookconfiguration", name)
        client_config = config["webhooks"][0]["clientConfig"]
        assert client_config["url"].startswith("https://127.0.0.1:")
        assert client_config["url"].endswith("/mutate")
        assert client_config["caBundle"]

        wait_until(lambda: webhook_in_force(cp, namespace, seed.FALCON_7B_ADAPTERS), 60)
        out = apply(cp, seed.FALCON_7B, namespace)
        assert out.returncode == 0, out.stderr
        stored = cp.kubectl_json("get", "workspace", "workspace-falcon-7b", "-n", namespace)
        assert stored["metadata"]["annotations"]["kaito.sh/runtime"] == "vllm"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "webhook.log").read_text()
    text = (tmp_path / "webhook.log").read_text()
    assert f"registered webhook configurations {name}" in text
    assert f"removed webhook configurations {name}" in text
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        assert cp.kubectl("get", kind, name, check=False).returncode != 0
    # without the webhook the placeholder is no longer refused at admission
    out = apply(cp, seed.FALCON_7B_ADAPTERS, namespace, "--dry-run=server")
    assert out.returncode == 0, out.stderr
