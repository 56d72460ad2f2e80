"""The reconciler's one settings object: every field has a description and bounds.

``Settings.from_sources(argv, env)`` reads command-line flags first, then environment variables
``KAITO_RECONCILER_<FIELD>`` (upper case), then the defaults. Nothing is read at import time.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api import settings_spec
from api.settings_spec import setting
from reconciler.errors import SettingsError
from reconciler.workload import DEFAULT_VLLM_CPU_IMAGE

ENV_PREFIX = "KAITO_RECONCILER_"

DEFAULT_VLLM_IMAGE = "ghcr.io/kaito-py/vllm:0.1.0"
DEFAULT_TRANSFORMERS_IMAGE = "ghcr.io/kaito-py/transformers:0.1.0"
_LEVEL_FIX = "use DEBUG, INFO, WARNING or ERROR"


def _f(default: Any, help: str, *, lo: float | None = None, hi: float | None = None) -> Any:
    return setting(default, help, low=lo, high=hi)


@dataclass(frozen=True)
class Settings:
    """How the reconciler connects, what it watches, how often, and how it elects a leader."""

    kubeconfig: str = _f(
        "",
        "kubeconfig file; empty: $KUBECONFIG, else the in-cluster service account",
    )
    context: str = _f("", "kubeconfig context; empty: the current context")
    namespace: str = _f("", "only reconcile Workspaces in this namespace; empty: all namespaces")
    relist_interval_s: float = _f(
        30.0,
        "seconds between full relists (the safety net); watches wake the loop sooner",
        lo=1,
        hi=3600,
    )
    pending_requeue_s: float = _f(
        15.0, "seconds before a Workspace that is not ready yet is looked at again", lo=0.5, hi=3600
    )
    backoff_base_s: float = _f(
        1.0, "first retry delay after a failed reconcile (doubles each time)", lo=0.05, hi=60
    )
    backoff_max_s: float = _f(300.0, "longest retry delay after failures", lo=1, hi=3600)
    workers: int = _f(4, "Workspaces reconciled concurrently", lo=1, hi=64)
    leader_elect: bool = _f(True, "elect a leader on a Lease (needed with more than one replica)")
    lease_name: str = _f("kaito-reconciler", "name of the leader-election Lease")
    lease_namespace: str = _f(
        "",
        "namespace of the Lease; empty: the pod's namespace in a cluster, else `default`",
    )
    lease_duration_s: float = _f(
        15.0, "seconds a leader holds the Lease without renewing it", lo=2, hi=600
    )
    renew_deadline_s: float = _f(
        10.0,
        "a leader that could not renew for this long stops writing (< lease duration)",
        lo=1,
        hi=600,
    )
    retry_period_s: float = _f(2.0, "seconds between Lease renewals and attempts", lo=0.2, hi=60)
    identity: str = _f("", "this replica's identity in the Lease; empty: hostname_pid")
    field_manager: str = setting(
        "kaito-reconciler",
        "server-side apply field manager",
        check=lambda v: None if v else "empty",
        fix="name the field manager",
    )
    metrics_host: str = _f("0.0.0.0", "address of the health and metrics endpoint")
    metrics_port: int = _f(
        8081, "port of /healthz, /readyz and /metrics; 0: any free port", lo=0, hi=65535
    )
    config_name: str = _f("kaito-config", "name of the admin defaults ConfigMap")
    config_namespace: str = _f(
        "", "namespace of the admin defaults ConfigMap; empty: the Lease's namespace"
    )
    vllm_image: str = _f(
        DEFAULT_VLLM_IMAGE, "vLLM runtime image when the admin ConfigMap sets none"
    )
    transformers_image: str = _f(
        DEFAULT_TRANSFORMERS_IMAGE, "transformers runtime image when the admin ConfigMap sets none"
    )
    vllm_cpu_image: str = _f(
        DEFAULT_VLLM_CPU_IMAGE,
        "vLLM image of CPU Workspaces (vllm-cpu) when the admin ConfigMap sets no vllmCpuImage",
    )
    node_class_group: str = _f(
        "karpenter.azure.com", "NodeClaim spec.nodeClassRef.group (the cloud's NodeClass API)"
    )
    node_class_kind: str = _f("AKSNodeClass", "NodeClaim spec.nodeClassRef.kind")
    node_class_name: str = _f("default", "NodeClaim spec.nodeClassRef.name")
    request_timeout_s: float = _f(30.0, "timeout of one API request", lo=1, hi=600)
    log_level: str = setting(
        "INFO",
        "log level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        parse=str.upper,
        fix=_LEVEL_FIX,
    )

    def __post_init__(self) -> None:
        problems = settings_spec.problems(self, ENV_PREFIX)
        if self.leader_elect and self.renew_deadline_s >= self.lease_duration_s:
            problems.append(
                f"--renew-deadline-s={self.renew_deadline_s:g} must be less than "
                f"--lease-duration-s={self.lease_duration_s:g}; lower it to about 2/3 of it"
            )
        if self.leader_elect and self.retry_period_s >= self.renew_deadline_s:
            problems.append(
                f"--retry-period-s={self.retry_period_s:g} must be less than "
                f"--renew-deadline-s={self.renew_deadline_s:g}"
            )
        if self.backoff_base_s > self.backoff_max_s:
            problems.append(
                f"--backoff-base-s={self.backoff_base_s:g} exceeds "
                f"--backoff-max-s={self.backoff_max_s:g}"
            )
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def effective_identity(self) -> str:
        return self.identity or f"{socket.gethostname()}_{os.getpid()}"

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """The command-line parser: one flag per field, with its description and bounds."""
        p = argparse.ArgumentParser(
            prog="python -m reconciler",
            description=(
                "kaito-py reconciler: turns Workspaces into GPU NodeClaims, a Deployment or "
                "StatefulSet and Services, and reports their status. Every flag can also be set "
                f"by the environment variable {ENV_PREFIX}<FLAG> (upper case, '_' for '-')."
            ),
        )
        settings_spec.add_arguments(p, cls, ENV_PREFIX)
        return p

    @classmethod
    def from_sources(
        cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Flags, then ``KAITO_RECONCILER_*`` variables, then defaults."""
        args = vars(cls.parser().parse_args(list(argv or [])))
        values, problems = settings_spec.read(cls, args, env or {}, ENV_PREFIX)
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(**values)
