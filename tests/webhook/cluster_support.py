"""Helpers for the webhook tests against the real control plane."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.cluster.harness import ControlPlane
from webhook import registration
from webhook.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crd"


def install_crds(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    cp.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")


def apply(cp: ControlPlane, obj: dict[str, Any] | str, namespace: str, *extra: str) -> Any:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return cp.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", *extra, input=text, check=False
    )


@contextmanager
def registered(
    kube_call: Callable[[Any], Any], kube: Kube, *, name: str, port: int, ca: bytes
) -> Iterator[None]:
    """Register the webhook by URL on 127.0.0.1 for the duration of the block."""
    for obj in registration.url_configurations(name, "127.0.0.1", port, ca):
        kube_call(kube.apply_webhook_configuration(obj))
    try:
        yield
    finally:
        kube_call(kube.delete_webhook_configurations(name))


PLACEHOLDER_DENIAL = "is the documentation's placeholder"


def webhook_in_force(cp: ControlPlane, namespace: str, probe: str) -> bool:
    """True once the apiserver calls the validating webhook (its config has propagated)."""
    out = apply(cp, probe, namespace, "--dry-run=server")
    return out.returncode != 0 and PLACEHOLDER_DENIAL in out.stderr
