"""``inference.config`` in the reconciler (pure): judge the cached ConfigMap, apply it to the
rendered workload, and wake the Workspaces a ConfigMap change concerns.

* ``judge(ws, configmap)``: the parsed settings, or the InferenceReady condition
  (``InferenceConfigMissing`` / ``InferenceConfigInvalid``) with the webhook's message. On a
  failure the reconciler leaves the workload as it is (never deletes or re-renders it because a
  ConfigMap broke) and reports the reason.
* ``apply(workload, runtime, config)``: the Deployment or StatefulSet with the settings as
  flags of the runtime's command (``api.inference_config.runtime_flags``) and the digest of
  ``inference_config.yaml`` as the Pod-template annotation ``kaito.sh/inference-config-hash``:
  a change of the ConfigMap changes the Pod template, which rolls the Pods out.
* ``project(configmap)``: what the cache keeps of a ConfigMap (metadata and only the
  ``inference_config.yaml`` key: the informer watches every ConfigMap).
* ``referencing(configmap, workspaces)``: the Workspaces whose ``inference.config`` names it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.inference_config import HASH_ANNOTATION, InferenceConfig, parse, runtime_flags
from api.workspace import INFERENCE_CONFIG_KEY, Runtime, Workspace
from reconciler.labels import CONTAINER_NAME
from reconciler.observe import Obj

REASON_INFERENCE_CONFIG_MISSING = "InferenceConfigMissing"
REASON_INFERENCE_CONFIG_INVALID = "InferenceConfigInvalid"
INFERENCE_CONFIG_KIND = "InferenceConfig"
"""The ``keys_for`` kind of the ConfigMap informer that serves ``inference.config``."""


@dataclass(frozen=True)
class Problem:
    """Why the ConfigMap cannot be used: an InferenceReady reason and the message."""

    reason: str
    message: str


def config_name(ws: Workspace) -> str | None:
    return ws.inference.config if ws.inference is not None else None


def judge(ws: Workspace, configmap: Mapping[str, Any] | None) -> InferenceConfig | Problem | None:
    """None when the Workspace names no ConfigMap; else the settings or the problem."""
    name = config_name(ws)
    if name is None:
        return None
    data = None if configmap is None else dict(configmap.get("data") or {})
    config, errors = parse(name, data)
    if config is not None:
        return config
    reason = (
        REASON_INFERENCE_CONFIG_MISSING
        if errors and errors[0].reason in ("inferenceconfig.missing", "inferenceconfig.nokey")
        else REASON_INFERENCE_CONFIG_INVALID
    )
    text = "; ".join(str(e) for e in errors)
    return Problem(reason, f"{text} (the running workload is left as it is)")


def apply(workload: Obj, runtime: Runtime, config: InferenceConfig) -> Obj:
    """The workload with the settings on the inference container and the digest annotation."""
    out = copy.deepcopy(dict(workload))
    template = out["spec"]["template"]
    meta = template.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: config.digest}
    for container in template["spec"]["containers"]:
        if container.get("name") == CONTAINER_NAME and "command" in container:
            container["command"] = _escaped(
                runtime_flags(config, runtime, container["command"]), container["command"]
            )
    return out


def _escaped(command: Sequence[str], before: Sequence[str]) -> list[str]:
    """New arguments with ``$(`` escaped as the renderer does (numbers and flags have none)."""
    return [a if i < len(before) else a.replace("$(", "$$(") for i, a in enumerate(command)]


def project(obj: Mapping[str, Any]) -> Obj:
    """The cached view of a ConfigMap: identity and the ``inference_config.yaml`` key only."""
    meta = obj.get("metadata") or {}
    data = obj.get("data") or {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
        "data": {INFERENCE_CONFIG_KEY: data[INFERENCE_CONFIG_KEY]}
        if INFERENCE_CONFIG_KEY in data
        else {},
    }


def referencing(configmap: Mapping[str, Any], workspaces: Sequence[Obj]) -> set[tuple[str, str]]:
    """(namespace, name) of the Workspaces whose ``inference.config`` names this ConfigMap."""
    meta = configmap.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    out = set()
    for ws in workspaces:
        wmeta = ws.get("metadata") or {}
        inference = ws.get("inference")
        ref = inference.get("config") if isinstance(inference, Mapping) else None
        if ref == name and wmeta.get("namespace") == namespace:
            out.add((namespace, str(wmeta.get("name", ""))))
    return out
