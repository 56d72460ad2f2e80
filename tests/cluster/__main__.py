"""Run the local test control plane in the foreground, for people.

    python -m tests.cluster up [--nodes 2] [--instance-type Standard_NC12s_v3] [--gpus 2]
                               [--label apps=falcon-7b] [--workdir DIR] [--exit] [--real-node]
    python -m tests.cluster clean     # remove what a killed real-node run left behind
    python -m tests.cluster prereqs   # install the real node's Debian packages (root)
    python -m tests.cluster demo [--wait] [--no-real-node]   # the main-job demo (`make demo`)

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on 127.0.0.1,
creates fake GPU nodes, prints the kubeconfig and the ``export KUBECONFIG=...`` line and
``kubectl get nodes`` with their GPUs, then waits until Ctrl-C (or exits at once with ``--exit``)
and stops everything it started.

``--real-node`` adds a real node (containerd + kubelet + kube-proxy, root only): the apiserver
then listens on 10.86.0.1 (added to ``lo``) and Pods on the node ``kaito-real-node`` really
run; Ctrl-C tears it all down.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import binaries as bins
from .harness import ControlPlane, HarnessError
from .hostprep import HostPrepError
from .nodes import create_fake_gpu_node, wait_node_ready
from .realnode import NODE_NAME, NodeError, RealCluster, clean

GPU_COLUMNS = (
    "NAME:.metadata.name,"
    "INSTANCE-TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,"
    "GPU:.status.allocatable.nvidia\\.com/gpu,"
    "GPU-PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,"
    "READY:.status.conditions[?(@.type=='Ready')].status"
)


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--label {item!r}: expected KEY=VALUE, for example apps=falcon-7b")
        labels[key] = value
    return labels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "clean", "prereqs", "demo"])
    parser.add_argument("--nodes", type=int, default=2, help="fake GPU nodes to create (default 2)")
    parser.add_argument(
        "--instance-type",
        default="Standard_NC12s_v3",
        help="instance type label of the fake nodes (default Standard_NC12s_v3)",
    )
    parser.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu per node (default 2)")
    parser.add_argument("--gpu-product", default="Tesla-V100-PCIE-16GB")
    parser.add_argument("--gpu-memory-mib", type=int, default=16384)
    parser.add_argument(
        "--label",
        action="append",
        default=["apps=falcon-7b"],
        help="KEY=VALUE label for the nodes (repeatable; default apps=falcon-7b)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="directory for certificates, kubeconfig, data and logs "
        "(default: a new temporary directory, removed on exit)",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="stop right after showing the nodes instead of waiting for Ctrl-C",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="also run a real node (containerd, kubelet, kube-proxy) on this machine (root)",
    )
    return parser


def _clean() -> int:
    left = clean(bins.binaries().kube_proxy)
    for item in left:
        print(f"still there: {item}", file=sys.stderr)
    say("clean" if not left else f"{len(left)} item(s) could not be removed")
    return 1 if left else 0


def _prereqs() -> int:
    from . import hostprep

    try:
        hostprep.ensure()
    except HostPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say("real-node prerequisites present")
    return 0


def _up(cp: ControlPlane, b: bins.Binaries, args: argparse.Namespace, t0: float) -> int:
    """Fake GPU nodes, the access lines, then wait for Ctrl-C (or return at once with --exit)."""
    labels = parse_labels(args.label)
    for i in range(args.nodes):
        name = f"gpu-node-{i}"
        say(f"creating fake GPU node {name} ({args.instance_type}, {args.gpus} GPU)")
        create_fake_gpu_node(
            cp,
            name,
            args.instance_type,
            gpus=args.gpus,
            gpu_product=args.gpu_product,
            gpu_memory_mib=args.gpu_memory_mib,
            labels=labels,
        )
    for i in range(args.nodes):
        wait_node_ready(cp, f"gpu-node-{i}")
    say(f"control plane up in {time.monotonic() - t0:.1f}s")
    print(f"\nkubeconfig: {cp.kubeconfig}")
    print(f"export KUBECONFIG={cp.kubeconfig}")
    print(f"kubectl:    {b.kubectl}\n")
    print(cp.kubectl("get", "nodes", "-o", f"custom-columns={GPU_COLUMNS}").stdout)
    if not args.exit:
        say("running; press Ctrl-C to stop")
        while all(p.alive() for p in cp.procs):
            time.sleep(1)
        dead = [p for p in cp.procs if not p.alive()]
        for p in dead:
            print(f"error: {p.name} exited:\n{p.tail()}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["demo"]:  # the demo has its own options (tests/cluster/demo.py)
        from .demo import main as demo

        return demo(given[1:])
    args = _parser().parse_args(given)
    if args.command == "clean":
        return _clean()
    if args.command == "prereqs":
        return _prereqs()

    # SIGTERM unwinds like Ctrl-C so the finally below stops everything.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    say(f"binaries (cache: {bins.cache_dir()})")
    try:
        b = bins.ensure()
    except bins.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    real = RealCluster(workdir=args.workdir) if args.real_node else None
    cp = ControlPlane(workdir=args.workdir, binaries=b)
    try:
        t0 = time.monotonic()
        if real is not None:
            say(
                "starting the control plane on 10.86.0.1 and a real node "
                "(containerd, kubelet, kube-proxy)"
            )
            real.start()
            cp = real.control_plane
            say(f"real node {NODE_NAME} Ready in {time.monotonic() - t0:.1f}s")
        else:
            say("starting etcd and kube-apiserver")
            cp.start()
            say(f"apiserver ready at {cp.server} in {time.monotonic() - t0:.1f}s")
            say("starting kube-controller-manager, kube-scheduler and KWOK")
            cp.start_controllers()
            cp.start_kwok()
        return _up(cp, b, args, t0)
    except (HarnessError, NodeError, HostPrepError, bins.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print()
    finally:
        say("stopping every process")
        if real is not None:
            real.stop()
        cp.stop()
        say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
