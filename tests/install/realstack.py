"""The whole system on the real node, as steps the end-to-end tests and ``make demo`` share.

* ``install(rc, workdir)``: the built controller image into the node's containerd, then
  ``kubectl apply -k`` of a test overlay over ``manifests/`` that only renames the controller
  image; waits for both replicas.
* ``workspace(...)``: the seed's adapter Workspace on the real node with the test's private
  preset (model) image, adapter image and strength.
* ``cpu_node(cp, instance_type)``: the node relabelled as a CPU instance type for a while;
  ``cpu_workspace(...)``: a CPU Workspace (vLLM by default) on it, with the same images.
* ``wait_ready(cp, namespace, name)``, ``cluster_ip(...)``, ``post(url, body)``.
* ``uninstall(cp, overlay)``: the Workspaces' namespace, then ``kubectl delete -k``.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler.labels import LABEL_INSTANCE_TYPE
from tests.api import seed
from tests.cluster.harness import ControlPlane
from tests.cluster.realnode import NODE_NAME, RealCluster
from tests.support.procs import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "kaito-system"
DEPLOYMENT = "kaito-controller"
CONTROLLER_IMAGE = "ghcr.io/kaito-py/controller"
WORKSPACE = "workspace-falcon-7b"
ADAPTER = "falcon-7b-adapter"
# The adapter image the tests and the demo serve (one build, cached by tests/images).
ADAPTER_IMAGE_NAME = "adapter-e2e"
ADAPTER_SEED = 1
ADAPTER_LORA: dict[str, Any] = {"r": 4, "lora_alpha": 8, "std": 0.3}
# The CPU Workspace: the smallest CPU SKU, and the CPU preset whose sizing asks least of it
# (2048-token context: a 2 GiB KV cache, about 9 GiB requested).
CPU_INSTANCE_TYPE = "Standard_D4s_v5"
CPU_PRESET = "tinyllama-1.1b-chat"

T = TypeVar("T")


class StackError(RuntimeError):
    """A step of the install or of serving did not complete; the message says which."""


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """``wait_until``, failing with a ``StackError`` (a step of the install did not complete)."""
    try:
        return wait_until(fn, timeout, what, every=every)
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None


def split_ref(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":")
    return name, tag


def overlay(directory: Path, controller_ref: str) -> Path:
    """``manifests/`` with only the controller image renamed (a kustomize overlay, test-only)."""
    name, tag = split_ref(controller_ref)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, directory)],
                "images": [{"name": CONTROLLER_IMAGE, "newName": name, "newTag": tag}],
            }
        )
    )
    return directory


def install(rc: RealCluster, controller_archive: Path, controller_ref: str, workdir: Path) -> Path:
    """Import the controller image, ``kubectl apply -k`` the overlay, wait for 2 replicas."""
    cp = rc.control_plane
    rc.import_image(controller_archive)
    kustom = overlay(workdir / "overlay", controller_ref)
    cp.kubectl("apply", "-k", str(kustom), timeout=120)
    wait_for(
        "2 controller replicas available",
        lambda: (
            cp.kubectl_json("get", "deployment", "-n", NAMESPACE, DEPLOYMENT)
            .get("status", {})
            .get("availableReplicas")
            == 2
        ),
        300,
    )
    return kustom


def uninstall(cp: ControlPlane, kustom: Path, *namespaces: str) -> None:
    for ns in namespaces:
        cp.kubectl(
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--timeout=180s",
            check=False,
            timeout=240,
        )
    cp.kubectl(
        "delete",
        "-k",
        str(kustom),
        "--ignore-not-found",
        "--timeout=180s",
        check=False,
        timeout=240,
    )


def installed_leftovers(cp: ControlPlane) -> list[str]:
    """What of the install is still in the cluster (empty after ``uninstall``)."""
    left: list[str] = []
    checks = (
        ("namespace", NAMESPACE),
        ("crd", "workspaces.kaito.sh"),
        ("mutatingwebhookconfigurations", "kaito-workspace-webhook"),
        ("validatingwebhookconfigurations", "kaito-workspace-webhook"),
        ("clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/part-of=kaito-py"),
    )
    for kind, *what in checks:
        out = cp.kubectl("get", kind, *what, "-o", "name", "--ignore-not-found", check=False)
        left += out.stdout.split()
    return left


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == kind:
            return dict(c)
    return {}


def workspace(namespace: str, model_ref: str, adapter_ref: str, strength: str) -> dict[str, Any]:
    """The seed's adapter Workspace on the real node, with these images and strength."""
    ws = seed.load(seed.FALCON_7B_ADAPTERS)
    ws["metadata"]["namespace"] = namespace
    ws["metadata"].setdefault("annotations", {})["kaito.sh/runtime"] = "transformers"
    ws["resource"]["preferredNodes"] = [NODE_NAME]
    ws["inference"]["preset"]["accessMode"] = "private"
    ws["inference"]["preset"]["presetOptions"] = {"image": model_ref}
    ws["inference"]["adapters"][0]["source"]["image"] = adapter_ref
    ws["inference"]["adapters"][0]["strength"] = strength
    return ws


@contextlib.contextmanager
def cpu_node(cp: ControlPlane, instance_type: str = CPU_INSTANCE_TYPE) -> Iterator[None]:
    """The real node labelled as ``instance_type`` (a CPU SKU) until the block ends, then as
    before: a CPU Workspace names its SKU, and only nodes of that SKU serve it."""
    node = cp.kubectl_json("get", "node", NODE_NAME)
    before = str(node["metadata"].get("labels", {}).get(LABEL_INSTANCE_TYPE, ""))
    label = f"{LABEL_INSTANCE_TYPE}={instance_type}"
    cp.kubectl("label", "node", NODE_NAME, "--overwrite", label)
    try:
        yield
    finally:
        restore = f"{LABEL_INSTANCE_TYPE}={before}" if before else f"{LABEL_INSTANCE_TYPE}-"
        cp.kubectl("label", "node", NODE_NAME, "--overwrite", restore, check=False)


def cpu_workspace(
    namespace: str,
    name: str,
    model_ref: str,
    adapter_ref: str,
    *,
    strength: str,
    config: str | None = None,
) -> dict[str, Any]:
    """A CPU Workspace (``CPU_PRESET`` on ``CPU_INSTANCE_TYPE``, the default runtime: vLLM) on
    the real node, with a private preset image, the adapter image at ``strength`` and the
    ``inference.config`` ConfigMap ``config``."""
    inference: dict[str, Any] = {
        "preset": {
            "name": CPU_PRESET,
            "accessMode": "private",
            "presetOptions": {"image": model_ref},
        },
        "adapters": [{"source": {"name": ADAPTER, "image": adapter_ref}, "strength": strength}],
    }
    if config is not None:
        inference["config"] = config
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": CPU_INSTANCE_TYPE,
            "labelSelector": {"matchLabels": {"apps": "falcon-7b"}},
            "preferredNodes": [NODE_NAME],
        },
        "inference": inference,
    }


def wait_ready(cp: ControlPlane, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    def succeeded() -> dict[str, Any] | None:
        ws: dict[str, Any] = cp.kubectl_json("get", "workspace", "-n", namespace, name)
        return ws if condition(ws, "WorkspaceSucceeded").get("status") == "True" else None

    return wait_for(f"Workspace {namespace}/{name} Ready", succeeded, timeout, every=2)


def cluster_ip(cp: ControlPlane, namespace: str, name: str) -> str:
    return str(cp.kubectl_json("get", "service", "-n", namespace, name)["spec"]["clusterIP"])


def post(url: str, body: dict[str, Any] | str, timeout: float = 120) -> dict[str, Any]:
    data = body if isinstance(body, str) else json.dumps(body)
    req = urllib.request.Request(
        url, data=data.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    if not isinstance(out, dict):
        raise StackError(f"POST {url}: not a JSON object: {out!r}")
    return out
