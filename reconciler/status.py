"""Status of a Workspace (pure): the three conditions, ``workerNodes``, and the Events a change
of status deserves.

* ``ResourceReady``: the node plan's verdict (reasons from ``reconciler.nodes`` and
  ``reconciler.needs``).
* ``InferenceReady``: True only while every serving Pod of the current template is ready.
  A failing Pod (image pull error, crash loop, bad config, unschedulable) makes it False at
  once, with the Pod, the container and what to do in the message.
* ``WorkspaceSucceeded``: True when both are; otherwise the first failing condition's reason.

Each condition carries ``observedGeneration``; ``lastTransitionTime`` changes only when the
condition's status changes, so a status recomputed from the same state is identical and is not
written again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.workspace import MODEL_ACCESS_SECRET_KEY, ConditionType, Workspace
from reconciler.labels import GPU_RESOURCE
from reconciler.observe import Obj

# InferenceReady reasons
REASON_SERVICE_READY = "ServiceReady"
REASON_RESOURCE_NOT_READY = "ResourceNotReady"
REASON_PODS_NOT_READY = "PodNotReady"
REASON_ROLLING_OUT = "RollingOut"
REASON_IMAGE_PULL = "ImagePullBackOff"
REASON_CRASH_LOOP = "CrashLoopBackOff"
REASON_CONFIG_ERROR = "ContainerConfigError"
REASON_MODEL_ACCESS_SECRET = "ModelAccessSecretMissing"
REASON_POD_FAILED = "PodFailed"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_INSUFFICIENT_GPU = "InsufficientGPU"
REASON_DELETING = "Deleting"
REASON_WORKLOAD_REFUSED = "WorkloadRefused"
# WorkspaceSucceeded
REASON_WORKSPACE_READY = "WorkspaceReady"

WAITING_REASONS = {
    "ErrImagePull": REASON_IMAGE_PULL,
    "ImagePullBackOff": REASON_IMAGE_PULL,
    "InvalidImageName": REASON_IMAGE_PULL,
    "ErrImageNeverPull": REASON_IMAGE_PULL,
    "CrashLoopBackOff": REASON_CRASH_LOOP,
    "RunContainerError": REASON_CRASH_LOOP,
    "CreateContainerConfigError": REASON_CONFIG_ERROR,
    "CreateContainerError": REASON_CONFIG_ERROR,
}

WARNING_REASONS = {
    REASON_IMAGE_PULL,
    REASON_CRASH_LOOP,
    REASON_CONFIG_ERROR,
    REASON_MODEL_ACCESS_SECRET,
    REASON_POD_FAILED,
    REASON_UNSCHEDULABLE,
    REASON_INSUFFICIENT_GPU,
    REASON_WORKLOAD_REFUSED,
    "InferenceConfigMissing",
    "InferenceConfigInvalid",
    "NodeClaimRefused",
    "NoFit",
    "UnknownPreset",
    "UnknownInstanceType",
    "RuntimeNotSupported",
    "InvalidSpec",
    "ProvisioningFailed",
    "NodeNotFound",
    "NodeLabelMismatch",
}


@dataclass(frozen=True)
class Cond:
    ok: bool
    reason: str
    message: str


def _fix(reason: str, ns: str, pod: str, container: str) -> str:
    if reason == REASON_IMAGE_PULL:
        return (
            "check the image name and tag, and that the Workspace's imagePullSecrets grant "
            "access to the registry"
        )
    if reason == REASON_CRASH_LOOP:
        return f"see `kubectl logs -n {ns} {pod} -c {container} --previous`"
    if reason == REASON_CONFIG_ERROR:
        return f"see `kubectl describe pod -n {ns} {pod}`"
    return ""


def pod_failure(pods: Sequence[Obj]) -> Cond | None:
    """The first failing Pod, as a False condition; None when no Pod is failing."""
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name, ns = str(meta.get("name")), str(meta.get("namespace", ""))
        status = pod.get("status") or {}
        for kind, key in (
            ("init container", "initContainerStatuses"),
            ("container", "containerStatuses"),
        ):
            for cs in status.get(key) or []:
                state = cs.get("state") or {}
                waiting = state.get("waiting") or {}
                reason = WAITING_REASONS.get(str(waiting.get("reason", "")))
                terminated = state.get("terminated")
                if (
                    reason is None
                    and terminated
                    and terminated.get("exitCode", 0) != 0
                    and (kind == "init container" or cs.get("restartCount", 0) > 0)
                ):
                    reason = REASON_CRASH_LOOP
                    waiting = {
                        "reason": terminated.get("reason") or "Error",
                        "message": f"exit code {terminated.get('exitCode')}",
                    }
                if reason is None:
                    continue
                detail = str(waiting.get("message") or waiting.get("reason") or "")
                fix = _fix(reason, ns, name, str(cs.get("name")))
                return Cond(
                    False,
                    reason,
                    f"Pod {name}: {kind} {cs.get('name')}: {waiting.get('reason')}"
                    + (f": {detail}" if detail and detail != waiting.get("reason") else "")
                    + (f"; {fix}" if fix else ""),
                )
        if status.get("phase") == "Failed":
            return Cond(
                False,
                REASON_POD_FAILED,
                f"Pod {name} failed: {status.get('reason', '')} {status.get('message', '')}".strip()
                + f"; see `kubectl describe pod -n {ns} {name}`",
            )
        for c in status.get("conditions") or []:
            if (
                c.get("type") == "PodScheduled"
                and c.get("status") == "False"
                and (c.get("reason") == "Unschedulable")
            ):
                msg = str(c.get("message", ""))
                reason = REASON_INSUFFICIENT_GPU if GPU_RESOURCE in msg else REASON_UNSCHEDULABLE
                return Cond(
                    False,
                    reason,
                    f"Pod {name} cannot be scheduled: {msg}; free GPUs on the Workspace's nodes "
                    "or let it provision more",
                )
    return None


def model_access_secret(ws: Workspace) -> str | None:
    """``inference.preset.presetOptions.modelAccessSecret``, if the Workspace names one."""
    preset = ws.inference.preset if ws.inference else None
    return preset.preset_options.model_access_secret if preset else None


def secret_failure(failure: Cond, secret: str | None) -> Cond:
    """A container config error caused by the missing ``modelAccessSecret`` (or its missing
    ``HF_TOKEN`` key), as kubelet reports it, becomes ``ModelAccessSecretMissing`` with the fix.
    The message names the Secret, never its contents."""
    if failure.reason != REASON_CONFIG_ERROR or not secret:
        return failure
    name = re.escape(secret)
    missing = re.search(rf'secret "{name}" not found', failure.message)
    no_key = re.search(
        rf"key {MODEL_ACCESS_SECRET_KEY} in Secret [^/\s]+/{name}\b", failure.message
    )
    if not (missing or no_key):
        return failure
    what = "does not exist" if missing else f"has no {MODEL_ACCESS_SECRET_KEY} key"
    return Cond(
        False,
        REASON_MODEL_ACCESS_SECRET,
        f"Secret {secret} (inference.preset.presetOptions.modelAccessSecret) {what} in the "
        "Workspace's namespace, so the runtime cannot get the Hugging Face token: "
        f"`kubectl create secret generic {secret} --from-literal={MODEL_ACCESS_SECRET_KEY}=hf_...` "
        "in that namespace; the Pods start once it exists",
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) else 0


def rollout(workload: Obj, replicas: int) -> tuple[bool, bool, str]:
    """(complete, updating, progress text) of a Deployment or StatefulSet."""
    meta = workload.get("metadata") or {}
    st = workload.get("status") or {}
    current = _int(st.get("observedGeneration")) >= _int(meta.get("generation"))
    updated = _int(st.get("updatedReplicas"))
    ready = _int(st.get("readyReplicas"))
    total = _int(st.get("replicas"))
    if workload.get("kind") == "StatefulSet":
        updating = st.get("currentRevision") != st.get("updateRevision") or not current
        available = ready
        complete = current and not updating and ready >= replicas and total == replicas
    else:
        revision = str(
            (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", "1")
        )
        available = _int(st.get("availableReplicas"))
        complete = (
            current
            and updated >= replicas
            and ready >= replicas
            and available >= replicas
            and total == replicas
        )
        updating = not complete and (revision not in ("", "1") or total > updated)
    text = f"{updated}/{replicas} Pod(s) updated, {min(ready, available)}/{replicas} ready"
    return complete, updating, text


def inference_condition(
    *,
    resource: Cond,
    workload: Obj | None,
    pods: Sequence[Obj],
    replicas: int,
    endpoint: str,
    model_access_secret: str | None = None,
) -> Cond:
    if not resource.ok:
        return Cond(False, REASON_RESOURCE_NOT_READY, f"waiting for GPU nodes: {resource.reason}")
    if workload is None:
        return Cond(False, REASON_PODS_NOT_READY, "creating the inference workload")
    failure = pod_failure(pods)
    complete, updating, progress = rollout(workload, replicas)
    if failure is not None:
        return secret_failure(failure, model_access_secret)
    if complete:
        return Cond(
            True, REASON_SERVICE_READY, f"{replicas}/{replicas} Pod(s) ready; serving at {endpoint}"
        )
    if updating:
        return Cond(False, REASON_ROLLING_OUT, f"rolling out the new Pod template: {progress}")
    return Cond(
        False,
        REASON_PODS_NOT_READY,
        f"waiting for the inference Pod(s): {progress}; the runtime downloads and loads the "
        "model before it reports ready, which can take several minutes",
    )


def succeeded_condition(resource: Cond, inference: Cond) -> Cond:
    if resource.ok and inference.ok:
        return Cond(True, REASON_WORKSPACE_READY, "the Workspace is serving its model")
    first = resource if not resource.ok else inference
    return Cond(False, first.reason, first.message)


def _condition(
    type_: str, cond: Cond, generation: int, now: str, old: Mapping[str, Any] | None
) -> dict[str, Any]:
    status = "True" if cond.ok else "False"
    since = now
    if old is not None and old.get("status") == status:
        since = str(old.get("lastTransitionTime") or now)
    return {
        "type": type_,
        "status": status,
        "reason": cond.reason,
        "message": cond.message[:32768],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def build_status(
    *,
    old: Mapping[str, Any] | None,
    generation: int,
    resource: Cond,
    inference: Cond,
    worker_nodes: Sequence[str],
    now: str,
) -> dict[str, Any]:
    """The status to write; equal to ``old`` when nothing changed."""
    old_conds = {
        c.get("type"): c for c in (old or {}).get("conditions") or [] if isinstance(c, dict)
    }
    succeeded = succeeded_condition(resource, inference)
    conds = [
        _condition(t.value, c, generation, now, old_conds.get(t.value))
        for t, c in (
            (ConditionType.RESOURCE_READY, resource),
            (ConditionType.INFERENCE_READY, inference),
            (ConditionType.WORKSPACE_SUCCEEDED, succeeded),
        )
    ]
    out: dict[str, Any] = {"conditions": conds}
    if worker_nodes:
        out["workerNodes"] = sorted(worker_nodes)
    return out


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal as written (conditions compared by type, order ignored)."""

    def norm(s: Mapping[str, Any] | None) -> Any:
        s = s or {}
        conds = sorted(
            (tuple(sorted(c.items())) for c in s.get("conditions") or [] if isinstance(c, dict)),
        )
        return (sorted(s.get("workerNodes") or []), conds)

    return bool(norm(a) == norm(b))


@dataclass(frozen=True)
class EventSpec:
    type: str
    """Normal or Warning."""
    reason: str
    message: str


def status_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[EventSpec]:
    """Events for condition changes: a Warning when a condition turns to a failure reason,
    Normal when nodes become ready and when the Workspace becomes ready."""
    before = {
        c.get("type"): (c.get("status"), c.get("reason"))
        for c in (old or {}).get("conditions") or []
        if isinstance(c, dict)
    }
    out = []
    for c in new.get("conditions") or []:
        key = (c["status"], c["reason"])
        if before.get(c["type"]) == key:
            continue
        if c["status"] == "False" and c["reason"] in WARNING_REASONS:
            if c["type"] == ConditionType.WORKSPACE_SUCCEEDED:
                continue  # the condition it copies has its own event
            out.append(EventSpec("Warning", c["reason"], c["message"]))
        elif c["status"] == "True" and c["type"] in (
            ConditionType.RESOURCE_READY,
            ConditionType.WORKSPACE_SUCCEEDED,
        ):
            out.append(EventSpec("Normal", c["reason"], c["message"]))
    return out
