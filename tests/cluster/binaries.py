"""Build the Kubernetes control-plane binaries from Go modules, into a cache keyed by version.

Nothing is downloaded from release pages and no container image is used: every binary is
compiled from the Go module proxy's sources.

- kube-apiserver, kube-controller-manager, kube-scheduler, kubectl: ``k8s.io/kubernetes``
  through the wrapper module in ``gomod/kubernetes`` whose ``replace`` lines pin every staging
  module (``k8s.io/api``, ...) to the matching ``v0.N.P`` tag. The replace list is derived from
  upstream's own go.mod (``sync-gomod``) and checked against it before every build.
- etcd: the wrapper module in ``gomod/etcd`` over ``go.etcd.io/etcd/server/v3``.
- kwok: ``go install sigs.k8s.io/kwok/cmd/kwok@VERSION``.

Usage::

    python -m tests.cluster.binaries ensure      # build what is missing (progress on stderr)
    python -m tests.cluster.binaries path        # print the cache directory
    python -m tests.cluster.binaries sync-gomod  # regenerate gomod/kubernetes from upstream
    python -m tests.cluster.binaries clean       # remove the cached binaries

The cache lives in ``$KAITO_TEST_BIN_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/kaito-py/bin``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import flocked

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
KWOK_MODULE = "sigs.k8s.io/kwok/cmd/kwok"

GOMOD_DIR = Path(__file__).with_name("gomod")
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The real node's binaries: same wrapper module, flags and version stamp, built as a separate step
# so that a cache made before they existed gains them without rebuilding the control plane.
NODE_COMMANDS = ("kubelet", "kube-proxy")


class BuildError(RuntimeError):
    """A binary could not be built; the message says which and how to fix it."""


def cache_dir() -> Path:
    """Root of the binary cache (``KAITO_TEST_BIN_DIR`` overrides the default)."""
    env = os.environ.get("KAITO_TEST_BIN_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-py" / "bin"


@dataclass(frozen=True)
class Binaries:
    """Paths of every control-plane binary, all inside the versioned cache."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kubelet: Path
    kube_proxy: Path

    def all(self) -> list[Path]:
        return [
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.etcd,
            self.kwok,
            self.kubelet,
            self.kube_proxy,
        ]


def kube_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"kubernetes-{KUBERNETES_VERSION}"


def etcd_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"etcd-{ETCD_VERSION}"


def kwok_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"kwok-{KWOK_VERSION}"


def binaries(root: Path | None = None) -> Binaries:
    """Where the binaries are (or will be once built)."""
    k = kube_dir(root)
    return Binaries(
        kube_apiserver=k / "kube-apiserver",
        kube_controller_manager=k / "kube-controller-manager",
        kube_scheduler=k / "kube-scheduler",
        kubectl=k / "kubectl",
        etcd=etcd_dir(root) / "etcd",
        kwok=kwok_dir(root) / "kwok",
        kubelet=k / "kubelet",
        kube_proxy=k / "kube-proxy",
    )


def missing(root: Path | None = None) -> list[Path]:
    return [p for p in binaries(root).all() if not os.access(p, os.X_OK)]


# --------------------------------------------------------------------------- pure helpers


def staging_replaces(upstream_gomod: str) -> list[str]:
    """The staging module paths that upstream's go.mod points at ``./staging/src/...``."""
    return sorted(
        set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/src/", upstream_gomod, re.M))
    )


def staging_version(kubernetes_version: str) -> str:
    """Kubernetes v1.N.P publishes its staging modules as v0.N.P."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not m:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    return f"v0.{m.group(1)}.{m.group(2)}"


def render_kube_gomod(upstream_gomod: str, kubernetes_version: str) -> str:
    """The wrapper go.mod: upstream's go/godebug lines, a require, a replace per staging module."""
    go_line = re.search(r"^go \S+$", upstream_gomod, re.M)
    godebug = re.findall(r"^godebug .+$", upstream_gomod, re.M)
    sv = staging_version(kubernetes_version)
    lines = [
        "// Generated by `python -m tests.cluster.binaries sync-gomod` from upstream's go.mod.",
        "// Wrapper module: builds k8s.io/kubernetes' control plane from the Go module proxy.",
        "module kaito-testbin/kubernetes",
        "",
        go_line.group(0) if go_line else "go 1.24.0",
        *godebug,
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
        "replace (",
        *[f"\t{m} => {m} {sv}" for m in staging_replaces(upstream_gomod)],
        ")",
        "",
    ]
    return "\n".join(lines)


def wrapper_replaces(wrapper_gomod: str) -> dict[str, str]:
    """``{module: version}`` of the wrapper's replace lines."""
    return dict(re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\S+\s+(v\S+)\s*$", wrapper_gomod, re.M))


def ldflags(kubernetes_version: str) -> str:
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", kubernetes_version)
    if not m:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={kubernetes_version}",
            f"-X {pkg}.gitMajor={m.group(1)}",
            f"-X {pkg}.gitMinor={m.group(2)}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


# --------------------------------------------------------------------------- I/O


def _say(msg: str) -> None:
    print(f"[binaries] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildError(
            "`go` is not on PATH: install Go 1.24 or newer (https://go.dev/dl/) to build the "
            "test control plane"
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def upstream_gomod_text(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"],
        capture_output=True,
        text=True,
        env=_go_env(),
        cwd=GOMOD_DIR / "kubernetes",
        check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"go mod download k8s.io/kubernetes@{kubernetes_version}: {out.stderr}")
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


def check_gomod() -> None:
    """Fail when the committed wrapper's replace list differs from upstream's staging list."""
    wrapper = (GOMOD_DIR / "kubernetes" / "go.mod").read_text()
    want = {m: staging_version(KUBERNETES_VERSION) for m in staging_replaces(upstream_gomod_text())}
    have = wrapper_replaces(wrapper)
    if have != want:
        raise BuildError(
            "tests/cluster/gomod/kubernetes/go.mod does not match upstream's staging modules for "
            f"{KUBERNETES_VERSION} (missing: {sorted(set(want) - set(have))}, extra: "
            f"{sorted(set(have) - set(want))}, wrong version: "
            f"{sorted(k for k in want if k in have and have[k] != want[k])}); "
            "run `python -m tests.cluster.binaries sync-gomod`"
        )


def sync_gomod() -> None:
    d = GOMOD_DIR / "kubernetes"
    (d / "go.mod").write_text(render_kube_gomod(upstream_gomod_text(), KUBERNETES_VERSION))
    subprocess.run([_go(), "mod", "tidy"], cwd=d, env=_go_env(), check=True)
    _say(f"wrote {d / 'go.mod'} and go.sum")


def _count_deps(packages: Sequence[str], cwd: Path) -> int:
    out = subprocess.run(
        [_go(), "list", "-deps", *packages],
        cwd=cwd,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return len(out.stdout.split()) if out.returncode == 0 else 0


def _go_build(label: str, args: list[str], cwd: Path, packages: Sequence[str]) -> None:
    """Run ``go build -v`` and print progress as packages compile."""
    total = _count_deps(packages, cwd)
    start = time.monotonic()
    cmd = [_go(), *args, *packages]
    _say(f"{label}: {' '.join(cmd[:3])} ... ({total or '?'} packages; cold builds take minutes)")
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    done, last = 0, 0.0
    tail: list[str] = []
    for raw in proc.stdout:
        line = raw.rstrip()
        tail = [*tail[-40:], line]
        if line and not line.startswith(("#", " ", "\t")) and ":" not in line:
            done += 1
        now = time.monotonic()
        if now - last >= 15:
            last = now
            pct = f" ~{min(99, 100 * done // total)}%" if total else ""
            _say(f"{label}: {done} packages compiled{pct}, {now - start:.0f}s elapsed")
    if proc.wait() != 0:
        raise BuildError(f"{label}: go build failed:\n" + "\n".join(tail))
    _say(f"{label}: built in {time.monotonic() - start:.0f}s")


def _install(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _kube_build_args(out: Path) -> list[str]:
    return [
        "build",
        "-v",
        "-trimpath",
        "-tags",
        "selinux,notest",
        "-ldflags",
        ldflags(KUBERNETES_VERSION),
        "-o",
        str(out) + "/",
    ]


def _build_kube(
    root: Path, label: str, commands: Sequence[str], install: Callable[[Path], None]
) -> None:
    """``go build`` the Kubernetes ``commands`` into a temporary folder, then ``install`` it."""
    check_gomod()
    tmp = Path(tempfile.mkdtemp(prefix=".kube-", dir=root))
    try:
        _go_build(
            f"{label} {KUBERNETES_VERSION}",
            _kube_build_args(tmp),
            GOMOD_DIR / "kubernetes",
            [f"k8s.io/kubernetes/cmd/{c}" for c in commands],
        )
        install(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_kubernetes(root: Path) -> None:
    _build_kube(root, "kubernetes", KUBE_COMMANDS, lambda tmp: _install(tmp, kube_dir(root)))


def build_node(root: Path) -> None:
    """kubelet and kube-proxy, added next to the control plane's binaries (which stay)."""

    def add(tmp: Path) -> None:
        final = kube_dir(root)
        final.mkdir(parents=True, exist_ok=True)
        for c in NODE_COMMANDS:
            (tmp / c).replace(final / c)

    _build_kube(root, "kubelet+kube-proxy", NODE_COMMANDS, add)


def build_etcd(root: Path) -> None:
    final = etcd_dir(root)
    tmp = Path(tempfile.mkdtemp(prefix=".etcd-", dir=root))
    try:
        _go_build(
            f"etcd {ETCD_VERSION}",
            ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp / "etcd")],
            GOMOD_DIR / "etcd",
            ["go.etcd.io/etcd/server/v3"],
        )
        _install(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_kwok(root: Path) -> None:
    final = kwok_dir(root)
    tmp = Path(tempfile.mkdtemp(prefix=".kwok-", dir=root))
    try:
        env = _go_env()
        env["GOBIN"] = str(tmp)
        env.pop("GOFLAGS", None)
        start = time.monotonic()
        _say(f"kwok {KWOK_VERSION}: go install sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}")
        proc = subprocess.run(
            [
                _go(),
                "install",
                "-trimpath",
                "-ldflags",
                "-s -w",
                f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"kwok {KWOK_VERSION}: go install failed:\n{proc.stderr[-4000:]}")
        _say(f"kwok {KWOK_VERSION}: built in {time.monotonic() - start:.0f}s")
        _install(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure(root: Path | None = None) -> Binaries:
    """Build whatever is missing (a warm cache returns at once) and return the paths."""
    root = root or cache_dir()
    if not missing(root):
        return binaries(root)
    waiting = "another build holds the cache lock; waiting for it"
    with flocked(root / ".build.lock", lambda: _say(waiting)):
        b = binaries(root)
        steps = [
            (b.kube_apiserver, b.kube_controller_manager, b.kube_scheduler, b.kubectl),
            (b.etcd,),
            (b.kwok,),
            (b.kubelet, b.kube_proxy),
        ]
        builders = (build_kubernetes, build_etcd, build_kwok, build_node)
        for paths, build in zip(steps, builders, strict=True):
            if any(not os.access(p, os.X_OK) for p in paths):
                build(root)
        still = missing(root)
        if still:
            raise BuildError(f"built, yet still missing: {', '.join(map(str, still))}")
    _say(f"all binaries ready in {root}")
    return binaries(root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.binaries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["ensure", "path", "sync-gomod", "check-gomod", "clean"])
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            for p in ensure().all():
                print(p)
        elif args.command == "path":
            print(cache_dir())
        elif args.command == "sync-gomod":
            sync_gomod()
        elif args.command == "check-gomod":
            check_gomod()
            _say("wrapper go.mod matches upstream")
        elif args.command == "clean":
            shutil.rmtree(cache_dir(), ignore_errors=True)
            _say(f"removed {cache_dir()}")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
