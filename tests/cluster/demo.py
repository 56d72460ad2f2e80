"""The main-job demo: ``python -m tests.cluster demo`` (``make demo``), offline, in minutes.

1. starts a local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK) from
   the cached Kubernetes binaries, installs the CRDs (the Workspace's, and Karpenter's NodeClaim
   for the test-only cloud) and runs the test-only cloud (NodeClaims become KWOK GPU nodes);
2. runs the admission webhook (``python -m webhook --register``, out-of-cluster on 127.0.0.1)
   and the reconciler (``python -m reconciler``) as real processes against it;
3. applies the seed's falcon-7b Workspace (its first example, verbatim) and shows it reach
   Ready: NodeClaims, nodes, Deployment, Service, Pods and the status conditions;
4. serves the seed's adapter Workspace and sends the seed's ``/chat`` request:
   - where a real node can run (root, Linux, the Debian packages, the image builder): from a
     real Pod on a real node (``tests.cluster.realnode``) through its Service's ClusterIP, after
     ``kubectl apply -k manifests/`` with the controller image built from our Dockerfile, the
     Workspace's model and adapter coming from images built for the tiny model
     (``tests/install/realstack.py``); the first run builds the images (tens of minutes), later
     runs reuse them;
   - elsewhere (it says why) with ``python -m reconciler.local run`` on this machine, on the
     tiny built-in model with one LoRA adapter.

Every step prints ``==> ...``. Ctrl-C or SIGTERM stops everything (exit status 130); a failure
prints the logs of the processes involved and exits 1. ``--wait`` keeps everything running
after the demo, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tests.api import seed
from tests.images.errors import ImageError
from tests.support.procs import (
    ROOT,
    Proc,
    ProcExited,
    WaitTimeout,
    free_port,
    python_env,
    python_module,
    wait_until,
)

from . import binaries as bins
from .harness import ControlPlane, HarnessError

if TYPE_CHECKING:
    from tests.support.fake_cloud import FakeCloud

    from .realnode import RealCluster

CRD_DIR = ROOT / "manifests" / "crd"
NAMESPACE = "default"
SYSTEM_NAMESPACE = "kaito-system"
WORKSPACE = "workspace-falcon-7b"
ADAPTER = "falcon-7b-adapter"
CHAT_BODY = '{"prompt":"YOUR_PROMPT_HERE"}'
"""The seed's first curl body, verbatim."""
CONDITIONS = ("ResourceReady", "InferenceReady", "WorkspaceSucceeded")
READY_TIMEOUT_S = 240.0
SERVE_TIMEOUT_S = 300.0

NODECLAIM_COLUMNS = (
    "NAME:.metadata.name,"
    'INSTANCE-TYPE:.spec.requirements[?(@.key=="node.kubernetes.io/instance-type")].values[0],'
    "GPUS:.spec.resources.requests.nvidia\\.com/gpu,"
    "NODE:.status.nodeName,"
    'READY:.status.conditions[?(@.type=="Ready")].status'
)
NODE_COLUMNS = (
    "NAME:.metadata.name,"
    "INSTANCE-TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,"
    "GPU:.status.allocatable.nvidia\\.com/gpu,"
    "GPU-PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,"
    'READY:.status.conditions[?(@.type=="Ready")].status'
)


class DemoError(RuntimeError):
    """A step failed; the message says which and why."""


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def show(text: str, indent: str = "    ") -> None:
    text = text.rstrip("\n")
    if text:
        print(textwrap.indent(text, indent, lambda _: True), flush=True)


def alive(procs: Sequence[Proc]) -> Callable[[], None]:
    """A ``wait_until`` check that gives up as soon as one of ``procs`` has exited."""

    def check() -> None:
        for p in procs:
            p.check_alive()

    return check


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class Demo:
    def __init__(self, workdir: Path, real_node: bool = True) -> None:
        self.workdir = workdir
        self.cp: ControlPlane | None = None
        self.cloud: FakeCloud | None = None
        self.procs: list[Proc] = []
        self.real_node = real_node
        self.real: RealCluster | None = None

    # ------------------------------------------------------------------ helpers

    def kubectl(self, *args: str, input: str | None = None) -> str:
        assert self.cp is not None
        out = self.cp.kubectl(*args, input=input, check=False)
        if out.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        echo: str | None = None,
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        proc = Proc(name, argv, log=log, env=python_env(env), echo=echo).start()
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------------ steps

    def start_cluster(self) -> None:
        say(f"Kubernetes binaries (cache: {bins.cache_dir()})")
        try:
            binaries = bins.ensure()
        except bins.BuildError as exc:
            raise DemoError(f"the Kubernetes binaries are not available: {exc}") from exc
        say("starting etcd and kube-apiserver on 127.0.0.1")
        t0 = time.monotonic()
        self.cp = ControlPlane(workdir=self.workdir / "cluster", binaries=binaries)
        self.cp.start()
        say(f"apiserver ready at {self.cp.server} ({time.monotonic() - t0:.0f}s)")
        say("starting kube-controller-manager, kube-scheduler and KWOK (simulated GPU nodes)")
        self.cp.start_controllers()
        self.cp.start_kwok()
        say("installing the CRDs: Workspace (kaito.sh) and NodeClaim (karpenter.sh, for tests)")
        show(self.kubectl("apply", "-f", str(CRD_DIR)))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/workspaces.kaito.sh",
            "crd/nodeclaims.karpenter.sh",
        )
        self.kubectl("create", "namespace", SYSTEM_NAMESPACE)
        say("starting the test-only cloud: NodeClaims become KWOK nodes of their instance type")
        from tests.support.fake_cloud import FakeCloud

        self.cloud = FakeCloud(self.cp)
        self.cloud.start()

    def start_controllers(self) -> None:
        assert self.cp is not None
        port = free_port()
        say(f"starting the webhook: python -m webhook --register on https://127.0.0.1:{port}")
        kubeconfig = str(self.cp.kubeconfig)
        argv = python_module(
            "webhook", "--kubeconfig", kubeconfig, "--host", "127.0.0.1", "--port", str(port),
            "--register", "--config-namespace", SYSTEM_NAMESPACE,
        )  # fmt: skip
        webhook = self.spawn("webhook", argv, env={"KAITO_CERTS_NAMESPACE": SYSTEM_NAMESPACE})

        def refuses_placeholder() -> str:
            out = self.cp.kubectl(  # type: ignore[union-attr]
                "apply",
                "--dry-run=server",
                "-n",
                NAMESPACE,
                "-f",
                "-",
                input=seed.FALCON_7B_ADAPTERS,
                check=False,
            )
            return out.stderr.strip() if "placeholder" in out.stderr else ""

        denial = wait_until(
            refuses_placeholder, 90, "the webhook to be in force", check=alive([webhook])
        )
        say("the webhook is in force: the seed's adapter example with <YOUR_IMAGE> is refused:")
        show(denial.split("denied the request: ", 1)[-1])

        metrics = free_port()
        say(f"starting the reconciler: python -m reconciler (health on 127.0.0.1:{metrics})")
        argv = python_module(
            "reconciler", "--kubeconfig", kubeconfig, "--metrics-host", "127.0.0.1",
            "--metrics-port", str(metrics), "--lease-namespace", SYSTEM_NAMESPACE,
            "--config-namespace", SYSTEM_NAMESPACE, "--pending-requeue-s", "2",
        )  # fmt: skip
        reconciler = self.spawn("reconciler", argv)
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{metrics}/readyz") == 200,
            90,
            "the reconciler to be ready",
            every=0.3,
            check=alive([reconciler]),
        )

    def apply_seed(self) -> None:
        path = self.workdir / "workspace-falcon-7b.yaml"
        path.write_text(seed.FALCON_7B, encoding="utf-8")
        say("applying the seed's falcon-7b Workspace (kubectl apply -f workspace-falcon-7b.yaml):")
        show(seed.FALCON_7B)
        show(self.kubectl("apply", "-n", NAMESPACE, "-f", str(path)))
        say("waiting for it to be Ready (NodeClaim -> node -> Deployment -> Pod)")
        seen: dict[str, tuple[str, str]] = {}

        def ready() -> bool:
            ws = json.loads(
                self.kubectl("get", "workspace", WORKSPACE, "-n", NAMESPACE, "-o", "json")
            )
            conds = {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}
            for kind in CONDITIONS:
                c = conds.get(kind)
                if c is None:
                    continue
                now = (c["status"], c.get("reason", ""))
                if seen.get(kind) != now:
                    seen[kind] = now
                    show(f"{kind}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}")
            return all(conds.get(k, {}).get("status") == "True" for k in CONDITIONS)

        t0 = time.monotonic()
        wait_until(
            ready, READY_TIMEOUT_S, "the Workspace to be Ready", every=0.5, check=alive(self.procs)
        )
        say(f"Workspace {WORKSPACE} is Ready ({time.monotonic() - t0:.0f}s)")

    def show_cluster(self) -> None:
        say("NodeClaims (created by the reconciler, launched by the test cloud):")
        show(self.kubectl("get", "nodeclaims", "-o", f"custom-columns={NODECLAIM_COLUMNS}"))
        say("nodes:")
        show(self.kubectl("get", "nodes", "-o", f"custom-columns={NODE_COLUMNS}"))
        say("the Deployment, Service and Pod of the Workspace:")
        show(
            self.kubectl(
                "get",
                "deployment,service,pods",
                "-n",
                NAMESPACE,
                "-l",
                f"kaito.sh/workspace={WORKSPACE}",
                "-o",
                "wide",
            )
        )
        say("kubectl get workspace:")
        show(self.kubectl("get", "workspace", "-n", NAMESPACE))
        say("conditions:")
        ws = json.loads(self.kubectl("get", "workspace", WORKSPACE, "-n", NAMESPACE, "-o", "json"))
        for c in ws["status"]["conditions"]:
            show(
                f"{c['type']:<20} {c['status']:<6} {c.get('reason', ''):<18} {c.get('message', '')}"
            )

    def serve_locally(self) -> None:
        say("building the tiny built-in model and a LoRA adapter (offline, cached)")
        from transformers.utils import logging as hf_logging

        from tests.support.tiny_adapters import make_lora_adapter
        from tests.support.tiny_model import build_tiny_llama

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model = build_tiny_llama()
        adapter = make_lora_adapter(model, self.workdir / "adapters" / ADAPTER, seed=1, std=0.3)
        path = self.workdir / "workspace-local.yaml"
        path.write_text(seed.FALCON_7B_ADAPTERS_FILLED, encoding="utf-8")
        port = free_port()
        argv = python_module(
            "reconciler.local", "run", str(path), "--model", str(model),
            "--adapter-dir", f"{ADAPTER}={adapter}", "--port", str(port), "--vllm", "off",
        )  # fmt: skip
        say("serving the seed's adapter Workspace on this machine:")
        show(seed.FALCON_7B_ADAPTERS_FILLED)
        show(
            "python -m reconciler.local run workspace-local.yaml --model <tiny model> "
            f"--adapter-dir {ADAPTER}=<adapter folder> --port {port} --vllm off"
        )
        run = self.spawn("run", argv, echo="    | ")
        run.wait_line("==> Ctrl-C stops it", SERVE_TIMEOUT_S)
        url = f"http://127.0.0.1:{port}/chat"
        say(f"POST {url} with the seed's request: {CHAT_BODY}")
        request = urllib.request.Request(
            url,
            data=CHAT_BODY.encode(),
            headers={"accept": "application/json", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            raise DemoError(f"/chat answered HTTP {e.code}: {e.read().decode()}") from e
        result = json.loads(body)
        if status != 200 or "Result" not in result:
            raise DemoError(f"/chat answered HTTP {status}: {body}")
        say(f"/chat answered (HTTP {status}; random text: the tiny model has random weights):")
        show(json.dumps(result, ensure_ascii=False))

    def real_node_unavailable(self) -> str | None:
        """Why the real-node path cannot run here (None: it can)."""
        if not self.real_node:
            return "--no-real-node was given"
        from tests.cluster import hostprep
        from tests.images import prereqs as image_prereqs

        try:
            hostprep.ensure()
            image_prereqs.ensure()
        except (RuntimeError, ImageError) as exc:  # a missing prerequisite: the fallback
            return str(exc)
        return None

    def serve_on_real_node(self) -> None:
        from tests.images import api as images
        from tests.install import realstack

        from .realnode import NODE_NAME, RealCluster

        say("step 4 on a real node: containerd + kubelet + kube-proxy on this machine (root)")
        t0 = time.monotonic()
        rc = self.real = RealCluster()
        rc.start()
        cp = rc.control_plane
        say(
            f"real node {NODE_NAME} Ready ({time.monotonic() - t0:.0f}s); "
            f"its own apiserver: {cp.server}"
        )
        say("building or reusing the images (tests/images; the first run takes tens of minutes)")
        controller = images.ensure_image("controller")
        model = images.ensure_model_image()
        adapter = images.ensure_adapter_image(
            seed=realstack.ADAPTER_SEED, name=realstack.ADAPTER_IMAGE_NAME, **realstack.ADAPTER_LORA
        )
        for image in (model, adapter):
            rc.import_image(image.archive)
        say(f"kubectl apply -k manifests/ (controller image {controller.ref})")
        realstack.install(rc, controller.archive, controller.ref, self.workdir)
        show(cp.kubectl("get", "pods", "-n", realstack.NAMESPACE, "-o", "wide").stdout)
        ws = realstack.workspace("default", model.ref, adapter.ref, "0.2")
        say(
            "applying the seed's adapter Workspace (its images: the tiny model and a LoRA adapter):"
        )
        show(json.dumps(ws["inference"], indent=2))
        cp.kubectl("apply", "-f", "-", input=json.dumps(ws))
        t1 = time.monotonic()
        realstack.wait_ready(cp, "default", WORKSPACE, SERVE_TIMEOUT_S * 3)
        say(f"Workspace Ready on the real node ({time.monotonic() - t1:.0f}s):")
        show(cp.kubectl("get", "pods,services", "-n", "default", "-o", "wide").stdout)
        ip = realstack.cluster_ip(cp, "default", WORKSPACE)
        url = f"http://{ip}/chat"
        say(f"POST {url} (the Service's ClusterIP) with the seed's request: {CHAT_BODY}")
        result = realstack.post(url, CHAT_BODY)
        if "Result" not in result:
            raise DemoError(f"/chat answered {result}")
        say("/chat answered from the real Pod (random text: the tiny model has random weights):")
        show(json.dumps(result, ensure_ascii=False))

    def run(self, wait: bool) -> None:
        t0 = time.monotonic()
        self.start_cluster()
        self.start_controllers()
        self.apply_seed()
        self.show_cluster()
        why = self.real_node_unavailable()
        if why is None:
            self.serve_on_real_node()
        else:
            say(f"no real node here ({why}); serving on this machine without a cluster instead")
            self.serve_locally()
        say(f"demo complete in {time.monotonic() - t0:.0f}s")
        if wait:
            assert self.cp is not None
            say(
                f"everything keeps running; export KUBECONFIG={self.cp.kubeconfig}; Ctrl-C stops it"
            )
            while all(p.alive() for p in self.procs):
                time.sleep(1)
            raise DemoError(
                "a process exited: " + ", ".join(p.name for p in self.procs if not p.alive())
            )

    # ------------------------------------------------------------------ teardown

    def logs(self) -> None:
        for p in self.procs:
            print(f"---- {p.name} (last lines of {p.name}.log) ----", file=sys.stderr)
            print(p.tail(), file=sys.stderr)
        if self.cp is not None:
            for name, text in self.cp.logs().items():
                print(f"---- {name} ----", file=sys.stderr)
                print("\n".join(text.splitlines()[-15:]), file=sys.stderr)
        sys.stderr.flush()

    def stop(self) -> None:
        say(
            "stopping everything: the local runtime, reconciler, webhook, test cloud, control plane"
        )
        for p in reversed(self.procs):
            code = p.stop()
            if code not in (0, None):
                print(f"    {p.name} exited with status {code}", flush=True)
        if self.cloud is not None:
            self.cloud.stop()
        if self.real is not None:
            say("tearing down the real node (Pods, containers, iptables, mounts, address)")
            self.real.stop()
        if self.cp is not None:
            self.cp.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        say("stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--wait", action="store_true", help="keep everything running after the demo, until Ctrl-C"
    )
    parser.add_argument(
        "--no-real-node",
        action="store_true",
        help="serve step 4 with `reconciler.local run` even where a real node could run",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(Path(tempfile.mkdtemp(prefix="kaito-demo-")), real_node=not args.no_real_node)
    code = 0
    try:
        demo.run(args.wait)
    except KeyboardInterrupt:
        print(flush=True)
        say("interrupted")
        code = 130
    except (
        DemoError,
        HarnessError,
        ProcExited,
        WaitTimeout,
        OSError,
        subprocess.SubprocessError,
        RuntimeError,
        ImageError,
    ) as exc:
        # RuntimeError: the real node's NodeError/HostPrepError and realstack's StackError.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        demo.logs()
        code = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        demo.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
