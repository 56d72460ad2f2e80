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

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.cluster.harness import ControlPlane, _die_with_parent
from tests.install.manifests import NAMESPACE, ROOT

SA = "kaito-controller"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SA}"
WEBHOOK_NAME = "kaito-workspace-webhook"

T = TypeVar("T")


def wait_until(fn: Callable[[], T], timeout: float = 60, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last = fn()
    while not last:
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s (last: {last!r})")
        time.sleep(every)
        last = fn()
    return last


def sa_kubeconfig(cp: ControlPlane, path: Path, *, duration: str = "2h") -> Path:
    token = cp.kubectl("create", "token", SA, "-n", NAMESPACE, f"--duration={duration}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kaito-test",
                "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_file)},
            }
        ],
        "users": [{"name": SA, "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {
                "name": SA,
                "context": {"cluster": "kaito-test", "user": SA, "namespace": NAMESPACE},
            }
        ],
        "current-context": SA,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


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


class Process:
    """``python -m MODULE ARGS`` as a real process, in the repository root."""

    def __init__(
        self, name: str, module: str, args: Sequence[str], env: Mapping[str, str], log: Path
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", module, *args]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_")}
        self.env = {**inherited, **env, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.port = 0
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as fh:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def peak_rss_kib(self) -> int:
        """The process's peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode


def get_json(cp: ControlPlane, *args: str) -> Any:
    out = cp.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None
