"""Helpers for the install tests against a real control plane.

* ``sa_kubeconfig(cp, path)``: a kubeconfig holding a fresh token of the kaito-controller
  ServiceAccount (``kubectl create token``), not the admin's certificate.
* ``can_i(cp, verb, resource, namespace=None)``: ``kubectl auth can-i`` as that ServiceAccount.
* ``Process``: one of our commands run as a real process (its own session, killed with the
  test run), logging to a file; ``stop()`` sends SIGTERM and returns the exit status.
* ``point_webhooks_at(cp, url)``: the coexistence of the installed Service-based webhook
  configurations with an out-of-cluster webhook — see the function.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.cluster.harness import ControlPlane, kubeconfig, write_kubeconfig
from tests.install.manifests import NAMESPACE
from tests.support.procs import Proc, python_env, python_module

SA = "kaito-controller"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SA}"
WEBHOOK_NAME = "kaito-workspace-webhook"


def sa_kubeconfig(cp: ControlPlane, path: Path, *, duration: str = "2h") -> Path:
    token = cp.kubectl("create", "token", SA, "-n", NAMESPACE, f"--duration={duration}")
    user = {"token": token.stdout.strip()}
    config = kubeconfig(
        cp.server, cp.ca_file, user, cluster="kaito-test", user_name=SA, namespace=NAMESPACE
    )
    return write_kubeconfig(path, config)


def can_i(cp: ControlPlane, verb: str, resource: str, namespace: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={SA_USER}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    out = cp.kubectl(*args, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), (args, out.stdout, out.stderr)
    return answer == "yes"


def kubectl_as_sa(
    cp: ControlPlane, kubeconfig: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    assert cp.binaries is not None
    return subprocess.run(
        [str(cp.binaries.kubectl), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def point_webhooks_at(cp: ControlPlane, base_url: str) -> None:
    """Repoint the installed configurations from the in-cluster Service to ``base_url``.

    The apiserver of the test control plane cannot reach a Service (there is no cluster
    network), so the out-of-cluster webhook stands in for the Deployment's Pods. Its
    ``--register`` mode would create URL-based configurations itself, but that needs create and
    delete on webhook configurations, which the installed RBAC rightly lacks. So the admin
    replaces each webhook's clientConfig (Service → URL, which also clears caBundle) and the
    webhook's certificate manager, with the ServiceAccount's own get/patch, writes the caBundle
    back, as it does in a cluster.
    """
    for kind, path in (
        ("mutatingwebhookconfiguration", "/mutate"),
        ("validatingwebhookconfiguration", "/validate"),
    ):
        patch = [
            {"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": base_url + path}}
        ]
        cp.kubectl("patch", kind, WEBHOOK_NAME, "--type=json", "-p", json.dumps(patch))


class Process(Proc):
    """``python -m MODULE ARGS`` as a real process in the repository root, with ``env`` on top
    of this environment less its ``KAITO_`` variables, logging to ``log``."""

    def __init__(
        self, name: str, module: str, args: Sequence[str], env: Mapping[str, str], log: Path
    ) -> None:
        super().__init__(
            name, python_module(module, *args), log=log, env=python_env(env, drop_prefix="KAITO_")
        )
        self.port = 0


def get_json(cp: ControlPlane, *args: str) -> Any:
    out = cp.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None
