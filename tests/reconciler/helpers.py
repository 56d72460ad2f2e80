"""Helpers for the reconciler's cluster tests: a reconciler process and kubectl shortcuts."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.harness import ControlPlane
from tests.support.procs import Proc, free_port, python_env, python_module, wait_until

FAST = [
    "--relist-interval-s",
    "3",
    "--pending-requeue-s",
    "1",
    "--backoff-base-s",
    "0.2",
    "--backoff-max-s",
    "2",
    "--lease-duration-s",
    "3",
    "--renew-deadline-s",
    "2",
    "--retry-period-s",
    "0.3",
]


class ReconcilerProc(Proc):
    """One ``python -m reconciler`` process, its health and metrics on a free port."""

    def __init__(
        self,
        cp: ControlPlane,
        namespace: str,
        args: list[str],
        log: Path,
        kubeconfig: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig or cp.kubeconfig
        self.cp = cp
        self.namespace = namespace
        self.port = free_port()
        self.args = args
        self.identity = ""
        argv = python_module(
            "reconciler",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
            "--lease-namespace",
            self.namespace,
            "--config-namespace",
            self.namespace,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--log-level",
            "DEBUG",
            *FAST,
            *self.args,
        )
        env = python_env(drop_prefix="KAITO_RECONCILER_")
        super().__init__("reconciler", argv, log=log, env=env, grace_s=15)

    def start(self) -> Self:
        super().start()
        wait_until(self.ready, 30, f"reconciler on port {self.port} to be ready")
        return self

    def ready(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            raise AssertionError(f"reconciler exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """``name{label="v",...}`` → value, for every sample."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def total(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def tail(self, n: int = 60) -> str:
        return super().tail(n)


StartReconciler = Callable[..., "ReconcilerProc"]


# ---------------------------------------------------------------------------- kubectl


def apply(cp: ControlPlane, namespace: str, manifest: str | dict[str, Any]) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def get(cp: ControlPlane, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = cp.kubectl(*args).stdout.strip()
    return json.loads(out) if out else None


def conditions(ws: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"])
        for c in ((ws or {}).get("status") or {}).get("conditions") or []
    }


def _wait_workspace(
    cp: ControlPlane,
    namespace: str,
    name: str,
    test: Callable[[dict[str, tuple[str, str]]], bool],
    *,
    timeout: float,
    what: str,
    failure: str,
) -> dict[str, Any]:
    """The Workspace once ``test(conditions)`` holds; else an AssertionError with its status."""

    def check() -> dict[str, Any] | None:
        ws = get(cp, "workspace", namespace, name)
        return ws if ws is not None and test(conditions(ws)) else None

    try:
        return wait_until(check, timeout, what)
    except AssertionError:
        ws = get(cp, "workspace", namespace, name)
        raise AssertionError(
            f"{failure}: {json.dumps((ws or {}).get('status'), indent=1)}"
        ) from None


def wait_ready(cp: ControlPlane, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def ready(conds: dict[str, tuple[str, str]]) -> bool:
        return all(
            conds.get(t, ("",))[0] == "True"
            for t in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded")
        )

    return _wait_workspace(
        cp,
        namespace,
        name,
        ready,
        timeout=timeout,
        what=f"workspace {name} ready",
        failure=f"workspace {namespace}/{name} not ready",
    )


def wait_condition(
    cp: ControlPlane,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def met(conds: dict[str, tuple[str, str]]) -> bool:
        got = conds.get(type_)
        return bool(got and got[0] == status and (reason is None or got[1] == reason))

    return _wait_workspace(
        cp,
        namespace,
        name,
        met,
        timeout=timeout,
        what=f"{type_}={status} ({reason})",
        failure=f"{namespace}/{name}: {type_} never became {status}/{reason}",
    )


def items(
    cp: ControlPlane, kind: str, namespace: str | None = None, selector: str | None = None
) -> list[dict[str, Any]]:
    args = ["get", kind, "-o", "json"]
    args += ["-n", namespace] if namespace else []
    args += ["-l", selector] if selector else []
    result: list[dict[str, Any]] = json.loads(cp.kubectl(*args).stdout)["items"]
    return result


def events(cp: ControlPlane, namespace: str, name: str) -> list[tuple[str, str, str]]:
    evs = items(cp, "events", namespace)
    return [
        (e["type"], e["reason"], e.get("message", ""))
        for e in evs
        if e["involvedObject"].get("kind") == "Workspace"
        and e["involvedObject"].get("name") == name
    ]


def claims_of(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return items(
        cp, "nodeclaims", None, f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}"
    )


def launched_claim(
    cp: ControlPlane, namespace: str, name: str, timeout: float = 30
) -> dict[str, Any]:
    """The Workspace's one NodeClaim once the cloud has written its ``status.nodeName``. The
    reconciler may use the claim's node (found by its labels) before the cloud records it on
    the claim, as with Karpenter, so a Ready Workspace does not imply a claim status yet."""

    def check() -> dict[str, Any] | None:
        claims = claims_of(cp, namespace, name)
        assert len(claims) <= 1, [c["metadata"]["name"] for c in claims]
        return claims[0] if claims and (claims[0].get("status") or {}).get("nodeName") else None

    return wait_until(check, timeout, f"the NodeClaim of {name} to record its node")


def settle(seconds: float) -> None:
    """Let the system run; used only where a test checks that nothing happens."""
    time.sleep(seconds)
