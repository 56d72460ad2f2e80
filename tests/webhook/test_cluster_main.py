"""``python -m webhook --register`` against a real apiserver: the documented out-of-cluster
mode (the same code as in-cluster) registers itself by URL and removes itself on exit."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

from cryptography import x509

from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.support.procs import free_port, wait_until
from tests.webhook.cluster_support import ROOT, apply, install_crds, webhook_in_force
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
        "--register", "--webhook-name", name, "--register-check-seconds", "0.3",
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

        # Someone deletes the configurations while it runs: they come back.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cp.kubectl("delete", kind, name)
        wait_until(registered, 30)
        wait_until(lambda: webhook_in_force(cp, namespace, seed.FALCON_7B_ADAPTERS), 60)
        assert cp.kubectl("get", "mutatingwebhookconfiguration", name, check=False).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "webhook.log").read_text()
    text = (tmp_path / "webhook.log").read_text()
    assert f"registered webhook configurations {name}" in text
    assert f"removed webhook configurations {name}" in text
    assert f"webhook configurations {name} were deleted while serving: re-created them" in text
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        assert cp.kubectl("get", kind, name, check=False).returncode != 0
    # without the webhook the placeholder is no longer refused at admission
    out = apply(cp, seed.FALCON_7B_ADAPTERS, namespace, "--dry-run=server")
    assert out.returncode == 0, out.stderr


def test_the_in_cluster_webhook_manifest_is_accepted(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        str(ROOT / "manifests" / "webhook" / "webhook-configurations.yaml"),
    )
    assert (
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/kaito-workspace-webhook"
        in out.stdout
    )
    assert "validatingwebhookconfiguration" in out.stdout


def _served_serial(port: int, ca_pem: bytes) -> int:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_manager_mode_keeps_the_pair_in_a_secret_and_reuses_it(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    install_crds(cp)
    name = f"kaito-certs-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {**os.environ, "KAITO_CERTS_NAMESPACE": namespace}
    cmd = [
        sys.executable, "-m", "webhook", "--kubeconfig", str(cp.kubeconfig),
        "--host", "127.0.0.1", "--port", str(port), "--register", "--webhook-name", name,
        "--config-namespace", namespace,
    ]  # fmt: skip
    serials = []
    for run in range(2):
        log_path = tmp_path / f"run{run}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(
                    lambda p=proc: (  # type: ignore[misc]
                        p.poll() is not None
                        or cp.kubectl(
                            "get", "validatingwebhookconfiguration", name, check=False
                        ).returncode
                        == 0
                    ),
                    60,
                )
                assert proc.poll() is None, log_path.read_text()
                secret = cp.kubectl_json("get", "secret", "kaito-webhook-certs", "-n", namespace)
                ca_pem = base64.b64decode(secret["data"]["ca.crt"])
                serving = x509.load_pem_x509_certificate(
                    base64.b64decode(secret["data"]["tls.crt"])
                )
                config = cp.kubectl_json("get", "validatingwebhookconfiguration", name)
                bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
                assert base64.b64decode(bundle) == ca_pem
                assert _served_serial(port, ca_pem) == serving.serial_number
                serials.append(serving.serial_number)
                wait_until(lambda: webhook_in_force(cp, namespace, seed.FALCON_7B_ADAPTERS), 60)
                if run == 0:
                    out = apply(cp, seed.FALCON_7B, namespace)
                    assert out.returncode == 0, out.stderr
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0, log_path.read_text()
    assert serials[0] == serials[1]  # the restart reused the Secret
    assert cp.kubectl("get", "validatingwebhookconfiguration", name, check=False).returncode != 0
