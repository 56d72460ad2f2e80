"""A real node next to the KWOK ones: containerd + kubelet + kube-proxy on this machine.

``RealCluster`` takes a machine-wide lock, removes debris of a killed run, puts ``NODE_IP`` on
``lo``, starts a ``ControlPlane`` bound and advertised on that address (so Pods reach it
through the ``kubernetes`` Service), the controllers and KWOK, then containerd (config, root,
state and socket of its own), the kubelet and kube-proxy (iptables mode). The node is labeled
like a GPU node of an instance type and advertises ``nvidia.com/gpu`` as an extended resource,
so GPU Pods schedule on it; what runs inside runs on the CPU.

``stop()`` always runs the same teardown as ``python -m tests.cluster clean``: Pods first, then
containerd's remaining tasks, the processes in the ``kubepods`` cgroups, kube-proxy's and the
kubelet's iptables chains, mounts, the bridge, the address, the cgroups and the fixed
directories. ``leftovers()`` lists whatever of that is still there (empty after a clean).

Machine-wide things (ports 10250/10248, fixed directories, iptables chains, the address on
``lo``) make two real nodes on one machine collide, hence the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.procs import Proc, WaitTimeout, wait_until

from . import binaries as bins
from . import busybox_image, hostprep
from .harness import ControlPlane, HarnessError
from .nodes import (
    GPU_RESOURCE,
    LABEL_GPU_COUNT,
    LABEL_GPU_MEMORY,
    LABEL_GPU_PRODUCT,
    LABEL_INSTANCE_TYPE,
)

NODE_IP = "10.86.0.1"
NODE_NAME = "kaito-real-node"
POD_CIDR = "10.88.0.0/16"
BRIDGE = "kaito0"
STATE_DIR = Path("/run/kaito-py-node")
ROOT_DIR = Path("/var/lib/kaito-py-node")
LOCK_FILE = Path("/run/kaito-py-node.lock")
SOCKET = STATE_DIR / "containerd.sock"
CTR_NAMESPACE = "k8s.io"
# Written by the kubelet or containerd whatever their flags say (see shared notes).
FIXED_DIRS = (
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/cni/results"),
    Path("/run/containerd/s"),
    Path("/run/containerd/fifo"),
    Path("/run/containerd/runc"),
)
FIXED_PARENTS = (Path("/var/lib/kubelet"), Path("/var/lib/cni"), Path("/run/containerd"))
CONTAINER_LOG_LINKS = Path("/var/log/containers")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
OUR_EXECUTABLES = ("containerd", "kubelet", "kube-proxy")  # containerd-shim-runc-v2 too
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


class NodeError(RuntimeError):
    """The real node could not start or is blocked; the message says why and what to do."""


def say(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- pure configs


def containerd_config(*, root: Path, state: Path, socket: Path, cni_conf: Path, pause: str) -> str:
    """containerd 1.6 (config version 2). ``restrict_oom_score_adj``: root here lacks
    CAP_SYS_RESOURCE, without it every sandbox fails (`can't get final child's PID`)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[{cri}]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{state}/runc"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf}"
"""


def cni_conflist(*, bridge: str, pod_cidr: str, ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "kaito-py",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    *, node_ip: str, ca_file: Path, cert: Path, key: Path, socket: Path, pod_logs: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "podLogsDir": str(pod_logs),
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "maxPods": 110,
    }


def kube_proxy_config(*, kubeconfig: Path, pod_cidr: str, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": pod_cidr,
        "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the host's conntrack and route_localnet sysctls alone.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def gpu_labels(instance_type: str, gpus: int, product: str, memory_mib: int) -> dict[str, str]:
    """The labels a GPU node of ``instance_type`` carries (as on the KWOK nodes)."""
    return {
        LABEL_INSTANCE_TYPE: instance_type,
        LABEL_GPU_PRODUCT: product,
        LABEL_GPU_COUNT: str(gpus),
        LABEL_GPU_MEMORY: str(memory_mib),
        "kaito-py/real-node": "true",
    }


# --------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Held while a real node runs; a second one fails at once, naming the holder."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fh: IO[str] = open(LOCK_FILE, "a+")  # noqa: SIM115 - held across the yield
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise NodeError(
                f"another real node is running on this machine ({holder}; lock {LOCK_FILE}). "
                "Only one can run at a time (fixed ports, directories, iptables chains and the "
                f"address {NODE_IP} are machine-wide): wait for it to finish or stop it. "
                "A killed run releases the lock; `python -m tests.cluster clean` removes its "
                "debris."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}")
        fh.flush()
        yield
    finally:
        fh.close()


# --------------------------------------------------------------------------- inspection


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _our_paths() -> tuple[str, ...]:
    return (str(STATE_DIR), str(ROOT_DIR))


def our_processes() -> list[tuple[int, str]]:
    """Processes whose command line names our directories (containerd, shims, kubelet...)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        exe = os.path.basename(cmd.split(" ", 1)[0])
        if exe.startswith(OUR_EXECUTABLES) and any(p in cmd for p in _our_paths()):
            out.append((int(d.name), cmd.strip()[:160]))
    return out


def kubepods_cgroups() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    found = [p for p in base.glob("*/kubepods") if p.is_dir()]
    if (base / "kubepods").is_dir():
        found.append(base / "kubepods")
    return found


def _cgroup_pids(root: Path) -> list[int]:
    pids: list[int] = []
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(x) for x in procs.read_text().split()]
    return pids


def our_mounts() -> list[str]:
    prefixes = (*_our_paths(), "/run/containerd/", "/var/lib/kubelet/", "/run/netns/cni-")
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt.startswith(prefixes) or mnt in _our_paths():
            out.append(mnt)
    return out


def our_chains() -> list[str]:
    out = []
    for tool in IPTABLES:
        for table in TABLES:
            proc = _run(tool, "-w", "-t", table, "-S")
            for line in proc.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
                    out.append(f"{tool} -t {table} {parts[1]}")
    return out


def address_on_lo() -> bool:
    return f" {NODE_IP}/" in _run("ip", "-4", "addr", "show", "dev", "lo").stdout


def bridge_exists() -> bool:
    return _run("ip", "link", "show", BRIDGE).returncode == 0


def leftovers() -> list[str]:
    """Everything of a real node still on this machine (empty when clean)."""
    found = [f"process {pid}: {cmd}" for pid, cmd in our_processes()]
    found += [f"mount {m}" for m in our_mounts()]
    found += [f"iptables chain {c}" for c in our_chains()]
    if bridge_exists():
        found.append(f"link {BRIDGE}")
    if address_on_lo():
        found.append(f"address {NODE_IP} on lo")
    found += [f"cgroup {c}" for c in kubepods_cgroups()]
    found += [f"directory {d}" for d in (STATE_DIR, ROOT_DIR, *FIXED_DIRS) if d.exists()]
    if CONTAINER_LOG_LINKS.is_dir():
        found += [
            f"log link {p}"
            for p in CONTAINER_LOG_LINKS.iterdir()
            if os.readlink(p).startswith(str(ROOT_DIR))
        ]
    return found


# --------------------------------------------------------------------------- teardown


def _kill_and_wait(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.1)


def _delete_rules_and_chains() -> None:
    for tool in IPTABLES:
        for table in TABLES:
            rules = _run(tool, "-w", "-t", table, "-S").stdout.splitlines()
            # Rules in any chain that jump to ours, then our chains (flushed, then deleted).
            for rule in rules:
                parts = rule.split()
                if (
                    parts[:1] == ["-A"]
                    and not parts[1].startswith(CHAIN_PREFIXES)
                    and "-j" in parts
                    and parts[parts.index("-j") + 1].startswith(CHAIN_PREFIXES)
                ):
                    _run(tool, "-w", "-t", table, "-D", *parts[1:])
            chains = [
                r.split()[1]
                for r in rules
                if r.startswith("-N ") and r.split()[1].startswith(CHAIN_PREFIXES)
            ]
            for c in chains:
                _run(tool, "-w", "-t", table, "-F", c)
            for c in chains:
                _run(tool, "-w", "-t", table, "-X", c)


def _rmdir_tree(root: Path) -> None:
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def clean(kube_proxy: Path | None = None) -> list[str]:
    """Remove every trace of a real node (idempotent); returns what is still left."""
    import shutil

    # 1. Processes: containerd, shims, kubelet, kube-proxy of a killed run, then the containers.
    _kill_and_wait([pid for pid, _ in our_processes()])
    for cg in kubepods_cgroups():
        _kill_and_wait(_cgroup_pids(cg))
    # 2. Mounts (deepest first): container rootfs, shm, volumes, netns files.
    for mnt in sorted(set(our_mounts()), key=lambda m: -m.count("/")):
        _run("umount", "-l", mnt)
    # 3. iptables: kube-proxy's own cleanup, then the kubelet's and CNI's chains.
    if kube_proxy and kube_proxy.exists():
        _run(str(kube_proxy), "--cleanup", timeout=60)
    _delete_rules_and_chains()
    # 4. Network: the bridge (veths went with their netns) and the address.
    if bridge_exists():
        _run("ip", "link", "delete", BRIDGE)
    if address_on_lo():
        _run("ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo")
    # 5. cgroups, bottom-up.
    for cg in kubepods_cgroups():
        _rmdir_tree(cg)
    # 6. Directories.
    if CONTAINER_LOG_LINKS.is_dir():
        for p in CONTAINER_LOG_LINKS.iterdir():
            if p.is_symlink() and os.readlink(p).startswith(str(ROOT_DIR)):
                p.unlink()
    for d in (STATE_DIR, ROOT_DIR, *FIXED_DIRS):
        shutil.rmtree(d, ignore_errors=True)
    for d in (*FIXED_PARENTS, CONTAINER_LOG_LINKS):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    return leftovers()


# --------------------------------------------------------------------------- the node


@dataclass
class RealCluster:
    """A control plane on ``NODE_IP`` with controllers, KWOK and one real node."""

    instance_type: str = "Standard_NC12s_v3"
    gpus: int = 2  # what Standard_NC12s_v3 has: the reconciler only uses nodes that match it
    gpu_product: str = "Tesla-V100-PCIE-16GB"
    gpu_memory_mib: int = 16384
    # As on the KWOK nodes of `python -m tests.cluster up`: the seed's Workspaces select it.
    labels: dict[str, str] = field(default_factory=lambda: {"apps": "falcon-7b"})
    workdir: Path | None = None
    cp: ControlPlane | None = None
    node_procs: list[Proc] = field(default_factory=list)
    _lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> RealCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def control_plane(self) -> ControlPlane:
        assert self.cp is not None, "start() first"
        return self.cp

    def start(self) -> None:
        hostprep.ensure()
        b = bins.ensure()
        self._lock.enter_context(machine_lock())
        try:
            left = leftovers()
            if left:
                say(f"removing debris of an earlier run: {len(left)} item(s)")
                clean(b.kube_proxy)
            if _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo").returncode != 0:
                raise NodeError(f"could not add {NODE_IP}/32 to lo")
            self.cp = ControlPlane(
                workdir=self.workdir, binaries=b, node_ip=NODE_IP, node_name=NODE_NAME
            )
            self.cp.start()
            self.cp.start_controllers()
            self.cp.start_kwok()
            self._start_containerd()
            self.import_image(busybox_image.write_archive(self.cp.dir / "busybox.oci.tar"))
            self._start_kubelet()
            self._start_kube_proxy()
            self._label_node()
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        proc = self.control_plane.spawn(name, argv)
        self.node_procs.append(proc)
        return proc

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(SOCKET), "-n", CTR_NAMESPACE, *args, timeout=timeout)

    def _start_containerd(self) -> None:
        cp = self.control_plane
        for d in (STATE_DIR, ROOT_DIR / "cni" / "net.d", ROOT_DIR / "cni" / "ipam"):
            d.mkdir(parents=True, exist_ok=True)
        (ROOT_DIR / "cni" / "net.d" / "10-kaito-py.conflist").write_text(
            json.dumps(
                cni_conflist(bridge=BRIDGE, pod_cidr=POD_CIDR, ipam_dir=ROOT_DIR / "cni" / "ipam")
            )
        )
        config = ROOT_DIR / "containerd.toml"
        config.write_text(
            containerd_config(
                root=ROOT_DIR / "containerd",
                state=STATE_DIR / "containerd",
                socket=SOCKET,
                cni_conf=ROOT_DIR / "cni" / "net.d",
                pause=busybox_image.REF,
            )
        )
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])
        cp.wait_ready(proc, lambda: SOCKET.exists() and self.ctr("version").returncode == 0, 60)

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive into the node's containerd (``imagePullPolicy: IfNotPresent``)."""
        out = self.ctr("images", "import", "--all-platforms", str(archive), timeout=1800)
        if out.returncode != 0:
            raise NodeError(f"ctr images import {archive}: {out.stderr.strip()}")

    def _start_kubelet(self) -> None:
        cp = self.control_plane
        d = cp.dir / "pki"
        kubelet_dir = ROOT_DIR / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = cp.write_kubeconfig(cp.dir / "kubelet.kubeconfig", "node.crt", "node.key")
        config = ROOT_DIR / "kubelet.json"
        config.write_text(
            json.dumps(
                kubelet_config(
                    node_ip=NODE_IP,
                    ca_file=d / "ca.crt",
                    cert=d / "kubelet.crt",
                    key=d / "kubelet.key",
                    socket=SOCKET,
                    pod_logs=ROOT_DIR / "pod-logs",
                )
            )
        )
        assert cp.binaries is not None
        proc = self._spawn(
            "kubelet",
            [
                str(cp.binaries.kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={kubelet_dir}",
                f"--cert-dir={ROOT_DIR / 'kubelet-pki'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )

        def ready() -> bool:
            status, body = cp.get(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conds = json.loads(body).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        cp.wait_ready(proc, ready, 120)

    def _start_kube_proxy(self) -> None:
        cp = self.control_plane
        assert cp.binaries is not None
        config = ROOT_DIR / "kube-proxy.json"
        config.write_text(
            json.dumps(
                kube_proxy_config(kubeconfig=cp.kubeconfig, pod_cidr=POD_CIDR, node_name=NODE_NAME)
            )
        )
        proc = self._spawn(
            "kube-proxy", [str(cp.binaries.kube_proxy), f"--config={config}", "--v=1"]
        )

        def synced() -> bool:
            return "KUBE-SERVICES" in _run("iptables", "-w", "-t", "nat", "-S").stdout

        cp.wait_ready(proc, synced, 60)

    def _label_node(self) -> None:
        cp = self.control_plane
        labels = {
            **gpu_labels(self.instance_type, self.gpus, self.gpu_product, self.gpu_memory_mib),
            **self.labels,
        }
        cp.kubectl(
            "label", "node", NODE_NAME, "--overwrite", *[f"{k}={v}" for k, v in labels.items()]
        )
        patch = [
            {
                "op": "add",
                "path": f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}",
                "value": str(self.gpus),
            }
        ]
        cp.kubectl(
            "patch",
            "node",
            NODE_NAME,
            "--subresource=status",
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node = cp.kubectl_json("get", "node", NODE_NAME)
            if node["status"].get("allocatable", {}).get(GPU_RESOURCE) == str(self.gpus):
                return
            time.sleep(0.5)
        raise NodeError(f"node {NODE_NAME} does not report {GPU_RESOURCE} allocatable")

    # ------------------------------------------------------------------ teardown

    def _delete_pods(self) -> None:
        cp = self.cp
        if cp is None or not any(p.name == "kube-apiserver" and p.alive() for p in cp.procs):
            return
        if not any(p.name == "kubelet" and p.alive() for p in self.node_procs):
            return
        # Cordoned first: Pods that controllers recreate stay Pending instead of landing here.
        cp.kubectl("cordon", NODE_NAME, check=False, timeout=30)
        sel = f"spec.nodeName={NODE_NAME}"
        cp.kubectl(
            "delete",
            "pods",
            "-A",
            f"--field-selector={sel}",
            "--grace-period=1",
            "--wait=false",
            check=False,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cp.kubectl(
                "get", "pods", "-A", f"--field-selector={sel}", "-o", "name", check=False
            )
            if out.returncode == 0 and not out.stdout.strip():
                return
            time.sleep(0.5)
        say("Pods still on the node after 60 s; removing their containers directly")

    def _delete_tasks(self) -> None:
        if not any(p.name == "containerd" and p.alive() for p in self.node_procs):
            return
        for line in self.ctr("tasks", "list", "-q").stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", line)
            self.ctr("tasks", "delete", "-f", line)
        for line in self.ctr("containers", "list", "-q").stdout.split():
            self.ctr("containers", "delete", line)

    def stop(self) -> None:
        """Teardown; always complete, whatever failed before."""
        kube_proxy = self.cp.binaries.kube_proxy if self.cp and self.cp.binaries else None
        try:
            with contextlib.suppress(Exception):
                self._delete_pods()
            for name in ("kube-proxy", "kubelet"):
                for p in self.node_procs:
                    if p.name == name:
                        p.stop()
            with contextlib.suppress(Exception):
                self._delete_tasks()
            for p in self.node_procs:
                p.stop()
            if self.cp is not None:
                self.cp.stop()
            left = clean(kube_proxy)
            if left:
                say("left after teardown (run `python -m tests.cluster clean`): " + "; ".join(left))
        finally:
            self.node_procs.clear()
            self._lock.close()


def wait_pod_ready(
    cp: ControlPlane, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    pod: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        nonlocal pod
        pod = cp.kubectl_json("get", "pod", "-n", namespace, name)
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return pod if conds.get("Ready") == "True" else None

    try:
        return wait_until(ready, timeout, f"pod {namespace}/{name} Ready", every=0.5)
    except WaitTimeout:
        raise HarnessError(
            f"pod {namespace}/{name} not Ready after {timeout}s: {pod.get('status')}"
        ) from None
