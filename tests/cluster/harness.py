"""A real Kubernetes control plane on 127.0.0.1, for tests and for people.

``ControlPlane`` starts etcd and kube-apiserver in a temporary directory with their own
certificates (a CA, an admin client-certificate kubeconfig, a service-account signing key) on
free loopback ports and waits until the apiserver is ready. On request it also starts
kube-controller-manager and kube-scheduler (Deployments get Pods, Pods get scheduled) and KWOK
(nodes annotated ``kwok.x-k8s.io/node=fake`` become Ready and their Pods Running).

Every process is started in its own process group with a parent-death signal, so it dies with
the test run even when that run is killed; ``stop()`` (also run at interpreter exit) terminates
what is left and removes the temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import Proc, ProcExited, WaitTimeout, free_port, wait_until

from . import binaries as bins
from . import pki

__all__ = [
    "ANNOTATION_FAKE_NODE",
    "ControlPlane",
    "HarnessError",
    "kubeconfig",
    "write_kubeconfig",
]

ANNOTATION_FAKE_NODE = "kwok.x-k8s.io/node"


class HarnessError(RuntimeError):
    """The control plane could not start; the message carries the failing process's log tail."""


def kubeconfig(
    server: str,
    ca_file: Path,
    user: dict[str, str],
    *,
    cluster: str,
    user_name: str,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one context (named as the cluster, or as the
    user when a namespace is set)."""
    context: dict[str, str] = {"cluster": cluster, "user": user_name}
    if namespace is not None:
        context["namespace"] = namespace
    name = cluster if namespace is None else user_name
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    """Write a kubeconfig readable by its owner only."""
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """One local control plane. Use as a context manager or call ``start()``/``stop()``."""

    workdir: Path | None = None
    keep_workdir: bool = False
    binaries: bins.Binaries | None = None
    procs: list[Proc] = field(default_factory=list)
    server: str = ""
    # Real-node mode: the apiserver binds and advertises this (non-loopback) address, which is in
    # its certificate, so Pods reach it through the `kubernetes` Service; it reaches kubelets by
    # their InternalIP. Certificates for the node named ``node_name`` are issued too.
    node_ip: str | None = None
    node_name: str = "kaito-real-node"
    _own_workdir: bool = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dir(self) -> Path:
        assert self.workdir is not None, "start() first"
        return self.workdir

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    def start(self) -> None:
        self.binaries = self.binaries or bins.ensure()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kaito-cluster-"))
            self._own_workdir = True
        atexit.register(self.stop)
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, argv: Sequence[str]) -> Proc:
        """Start ``argv`` in the working directory, logging to ``logs/<name>.log``; ``stop()``
        stops it."""
        log = self.dir / "logs" / f"{name}.log"
        proc = Proc(name, argv, log=log, cwd=self.dir, grace_s=10).start()
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, ready: Callable[[], bool], timeout: float) -> None:
        """Wait until ``ready()``; a ``HarnessError`` with the log tail when ``proc`` exits or
        ``timeout`` passes."""
        try:
            wait_until(ready, timeout, f"{proc.name} to be ready", check=proc.check_alive)
        except ProcExited as exc:
            raise HarnessError(f"{exc}:\n{proc.tail()}") from None
        except WaitTimeout:
            raise HarnessError(
                f"{proc.name} not ready after {timeout:.0f}s:\n{proc.tail()}"
            ) from None

    def _write_pki(self) -> None:
        d = self.dir / "pki"
        d.mkdir(parents=True, exist_ok=True)
        ca, ca_key, ca_cert = pki.make_ca()
        pki.write(d / "ca.crt", ca.cert_pem)
        pki.write(d / "ca.key", ca.key_pem, private=True)
        serving = pki.issue(
            ca_key,
            ca_cert,
            "kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.96.0.1", *([self.node_ip] if self.node_ip else [])),
        )
        pki.write(d / "apiserver.crt", serving.cert_pem)
        pki.write(d / "apiserver.key", serving.key_pem, private=True)
        if self.node_ip:
            node = pki.issue(
                ca_key, ca_cert, f"system:node:{self.node_name}", org="system:nodes", client=True
            )
            pki.write(d / "node.crt", node.cert_pem)
            pki.write(d / "node.key", node.key_pem, private=True)
            kubelet = pki.issue(
                ca_key,
                ca_cert,
                self.node_name,
                server=True,
                dns=(self.node_name,),
                ips=(self.node_ip,),
            )
            pki.write(d / "kubelet.crt", kubelet.cert_pem)
            pki.write(d / "kubelet.key", kubelet.key_pem, private=True)
        admin = pki.issue(ca_key, ca_cert, "kaito-admin", org="system:masters", client=True)
        pki.write(d / "admin.crt", admin.cert_pem)
        pki.write(d / "admin.key", admin.key_pem, private=True)
        sa_key, sa_pub = pki.service_account_keys()
        pki.write(d / "sa.key", sa_key, private=True)
        pki.write(d / "sa.pub", sa_pub)

    def _start_etcd(self) -> None:
        assert self.binaries is not None
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        proc = self.spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                    return bool(json.loads(r.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        self.wait_ready(proc, healthy, 60)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.dir / "pki" / "admin.crt", self.dir / "pki" / "admin.key")
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET a path on the apiserver as the admin; returns (status, body)."""
        try:
            with urllib.request.urlopen(
                f"{self.server}{path}", timeout=timeout, context=self._ssl()
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _start_apiserver(self) -> None:
        assert self.binaries is not None
        host = self.node_ip or "127.0.0.1"
        port = free_port(host)
        self.server = f"https://{host}:{port}"
        d = self.dir / "pki"
        node_flags = (
            [
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={d / 'admin.crt'}",
                f"--kubelet-client-key={d / 'admin.key'}",
                f"--kubelet-certificate-authority={d / 'ca.crt'}",
            ]
            if self.node_ip
            else []
        )
        proc = self.spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={host}",
                f"--advertise-address={host}",
                f"--secure-port={port}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                "--profiling=false",
                *node_flags,
                "--v=1",
            ],
        )
        self._write_kubeconfig()

        def ready() -> bool:
            try:
                status, _ = self.get("/readyz", timeout=2)
            except OSError:
                return False
            return status == 200

        self.wait_ready(proc, ready, 120)
        # RBAC bootstrap finishes inside readyz; the default namespace appears shortly after.
        self.wait_ready(proc, lambda: self.get("/api/v1/namespaces/default")[0] == 200, 60)

    def write_kubeconfig(self, path: Path, cert: str, key: str) -> Path:
        """A kubeconfig for this apiserver with the client certificate ``pki/<cert>``."""
        d = self.dir / "pki"
        user = {"client-certificate": str(d / cert), "client-key": str(d / key)}
        return write_kubeconfig(
            path, kubeconfig(self.server, self.ca_file, user, cluster="c", user_name="u")
        )

    def _write_kubeconfig(self) -> None:
        d = self.dir / "pki"
        user = {"client-certificate": str(d / "admin.crt"), "client-key": str(d / "admin.key")}
        cfg = kubeconfig(
            self.server, self.ca_file, user, cluster="kaito-test", user_name="kaito-admin"
        )
        write_kubeconfig(self.kubeconfig, cfg)

    def start_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler against this apiserver."""
        assert self.binaries is not None
        kc = str(self.kubeconfig)
        d = self.dir / "pki"
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        cm = self.spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                f"--cluster-signing-cert-file={d / 'ca.crt'}",
                f"--cluster-signing-key-file={d / 'ca.key'}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--concurrent-deployment-syncs=10",
                "--concurrent-gc-syncs=20",
                "--v=1",
            ],
        )
        sched = self.spawn(
            "kube-scheduler",
            [str(self.binaries.kube_scheduler), *common, f"--secure-port={free_port()}", "--v=1"],
        )
        # Ready when the service-account controller has made "default" in kube-system.
        self.wait_ready(
            cm,
            lambda: self.get("/api/v1/namespaces/kube-system/serviceaccounts/default")[0] == 200,
            90,
        )
        self.wait_ready(sched, lambda: True, 1)

    def start_kwok(self) -> None:
        """KWOK managing nodes annotated ``kwok.x-k8s.io/node=fake``."""
        assert self.binaries is not None
        proc = self.spawn(
            "kwok",
            [
                str(self.binaries.kwok),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={ANNOTATION_FAKE_NODE}=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        time.sleep(0.5)
        if not proc.alive():
            raise HarnessError(f"kwok exited with {proc.returncode}:\n{proc.tail()}")

    # ------------------------------------------------------------------ clients

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this cluster; raises with stderr when ``check``."""
        assert self.binaries is not None
        proc = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def logs(self) -> dict[str, str]:
        return {p.name: p.tail(200) for p in self.procs}
