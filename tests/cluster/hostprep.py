"""What a real node needs on the host, checked and installed by the project itself.

The container runtime and the network tools come from Debian packages (``apt-get install``,
idempotent: a second run installs nothing). ``missing()`` names what is absent and why it
matters; ``ensure()`` installs the packages when it can and says what is still missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str  # the Debian package
    provides: str  # a file it installs that the node uses
    why: str


PACKAGES = (
    Package("containerd", "/usr/bin/containerd", "the container runtime (and `ctr`)"),
    Package("runc", "/usr/sbin/runc", "the OCI runtime containerd starts containers with"),
    Package("containernetworking-plugins", "/usr/lib/cni/bridge", "Pod networking (CNI)"),
    Package("iptables", "/usr/sbin/iptables", "kube-proxy's Services and the kubelet's chains"),
    Package("conntrack", "/usr/sbin/conntrack", "kube-proxy clears stale UDP flows with it"),
    Package("socat", "/usr/bin/socat", "kubectl port-forward through the kubelet"),
    Package("busybox-static", "/bin/busybox", "the pause image and the node's test image"),
)


class HostPrepError(RuntimeError):
    """The host cannot run a real node; the message names what is missing."""


def missing_packages() -> list[Package]:
    return [p for p in PACKAGES if not Path(p.provides).exists()]


def missing_system() -> list[str]:
    """What packages cannot fix: root, Linux, cgroups, the ``ip`` command."""
    out = []
    if not sys.platform.startswith("linux"):
        out.append(f"Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        out.append(
            "root (the kubelet, containerd and kube-proxy change mounts, links and iptables)"
        )
    if not Path("/sys/fs/cgroup").is_dir() or not any(Path("/sys/fs/cgroup").iterdir()):
        out.append("a mounted cgroup file system at /sys/fs/cgroup")
    if not shutil.which("ip"):
        out.append("the `ip` command (Debian package iproute2)")
    return out


def describe(packages: list[Package]) -> str:
    return ", ".join(f"{p.name} ({p.provides}: {p.why})" for p in packages)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        ["apt-get", "-q", "-y", *args], env=env, capture_output=True, text=True, check=False
    )


def ensure() -> None:
    """Install the missing packages with apt-get; raise naming whatever is still missing."""
    system = missing_system()
    if system:
        raise HostPrepError("a real node needs: " + "; ".join(system))
    need = missing_packages()
    if not need:
        return
    if not shutil.which("apt-get"):
        raise HostPrepError(f"missing packages and no apt-get to install them: {describe(need)}")
    names = [p.name for p in need]
    print(f"[node] apt-get install {' '.join(names)}", file=sys.stderr, flush=True)
    proc = _apt("install", "--no-install-recommends", *names)
    if proc.returncode != 0:
        _apt("update")
        proc = _apt("install", "--no-install-recommends", *names)
    still = missing_packages()
    if still:
        raise HostPrepError(
            f"apt-get install failed; still missing: {describe(still)}\n{proc.stderr[-2000:]}"
        )
