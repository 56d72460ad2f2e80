"""Kubeconfigs for the test control plane whose user authenticates another way than the admin's
client certificate files: embedded certificate data, a bearer token or token file, or an ``exec``
credential plugin (a small script written here that prints an ``ExecCredential``, as EKS's
``aws eks get-token``, GKE's ``gke-gcloud-auth-plugin`` and AKS's ``kubelogin`` do)."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.cluster.harness import ControlPlane

EXEC_API = "client.authentication.k8s.io/v1"


def user_kubeconfig(
    cp: ControlPlane, path: Path, user: dict[str, Any], *, user_name: str = "someone"
) -> Path:
    """A kubeconfig for ``cp``'s apiserver (its CA embedded) with ``user`` as the user entry."""
    ca = (cp.dir / "pki" / "ca.crt").read_bytes()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": cp.server,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user_name}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)
    return path


def admin_cert_data(cp: ControlPlane) -> tuple[str, str]:
    """The admin's client certificate and key, PEM text."""
    pki = cp.dir / "pki"
    return (pki / "admin.crt").read_text(), (pki / "admin.key").read_text()


def exec_plugin(
    path: Path,
    statuses: list[dict[str, Any]],
    *,
    fail: str = "",
) -> Path:
    """An executable exec credential plugin. Run number ``i`` prints an ``ExecCredential`` with
    ``statuses[min(i, len - 1)]`` and appends a line to ``<path>.runs``; with ``fail`` it prints
    that to stderr and exits 1 instead."""
    runs = path.with_suffix(".runs")
    script = f"""\
        #!{sys.executable}
        import json, pathlib, sys
        runs = pathlib.Path({str(runs)!r})
        n = len(runs.read_text().splitlines()) if runs.exists() else 0
        with runs.open("a") as fh:
            fh.write("run\\n")
        if {fail!r}:
            print({fail!r}, file=sys.stderr)
            sys.exit(1)
        statuses = json.loads({json.dumps(statuses)!r})
        status = statuses[min(n, len(statuses) - 1)]
        kind = "ExecCredential"
        print(json.dumps({{"apiVersion": {EXEC_API!r}, "kind": kind, "status": status}}))
        """
    path.write_text(textwrap.dedent(script))
    path.chmod(0o755)
    return path


def exec_runs(plugin: Path) -> int:
    """How many times the plugin ran."""
    runs = plugin.with_suffix(".runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def exec_user(plugin: Path) -> dict[str, Any]:
    """The kubeconfig user entry that runs ``plugin``."""
    return {
        "exec": {
            "apiVersion": EXEC_API,
            "command": str(plugin),
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }
    }


def service_account_token(cp: ControlPlane, namespace: str, name: str, role: str) -> str:
    """A token of a new ServiceAccount ``namespace/name`` bound to the ClusterRole ``role``."""
    cp.kubectl("create", "serviceaccount", name, "-n", namespace)
    cp.kubectl(
        "create",
        "clusterrolebinding",
        f"{namespace}-{name}",
        f"--clusterrole={role}",
        f"--serviceaccount={namespace}:{name}",
    )
    return str(cp.kubectl("create", "token", name, "-n", namespace).stdout.strip())


@contextlib.contextmanager
def exec_admin_kubeconfig(cp: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig whose user (``eks``) runs the plugin ``tmp_path/plugin``, which prints the
    token of a ServiceAccount bound to cluster-admin (the binding is removed on exit)."""
    token = service_account_token(cp, namespace, "controller", "cluster-admin")
    plugin = exec_plugin(tmp_path / "plugin", [{"token": token}])
    try:
        yield user_kubeconfig(cp, tmp_path / "exec.kc", exec_user(plugin), user_name="eks")
    finally:
        cp.kubectl("delete", "clusterrolebinding", f"{namespace}-controller", check=False)


def failing_exec_kubeconfig(tmp_path: Path, stderr: str) -> tuple[Path, Path]:
    """``(plugin, kubeconfig)``: user ``eks`` of context ``test`` runs a plugin that prints
    ``stderr`` and exits 1 (the server is never reached)."""
    plugin = exec_plugin(tmp_path / "plugin", [], fail=stderr)
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "eks", "user": exec_user(plugin)}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "eks"}}],
        "current-context": "test",
    }
    kc = tmp_path / "failing.kc"
    kc.write_text(json.dumps(cfg))
    return plugin, kc


def assert_a_failing_plugin_stops(
    tmp_path: Path, argv: list[str], env: dict[str, str], cwd: Path
) -> None:
    """``python -m <argv> --kubeconfig K``, K's exec plugin failing: exit 1 with a message
    naming the kubeconfig, the context, the user, the plugin, its own words and the fix."""
    plugin, kc = failing_exec_kubeconfig(tmp_path, "error: the SSO session has expired")
    out = subprocess.run(
        [sys.executable, "-m", *argv, "--kubeconfig", str(kc)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert f"kubeconfig {kc}, context 'test', user 'eks'" in out.stderr
    assert f"the exec credential plugin {str(plugin)!r} failed" in out.stderr
    assert "error: the SSO session has expired" in out.stderr
    assert "fix: run the plugin's command by hand to see why" in out.stderr
