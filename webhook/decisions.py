"""Admission decisions as pure functions of the request and the settings in force.

``mutate(request, config)`` defaults a Workspace (``api.defaults.default``) and returns the JSON
Patch diff; ``validate(request, context)`` runs ``api.validation`` and returns every problem.
The HTTP layer (``webhook.app``) only parses, looks up the preferred nodes, calls these and maps
the ``Decision`` onto an AdmissionReview response.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from api import inference_config
from api.config import AdminConfig
from api.cpu import CpuFit, cpu_preset_on_gpu_warning, estimate_cpu
from api.defaults import default
from api.names import dns1123_subdomain
from api.presets import Preset
from api.sizing import Fit, estimate, shape_of_sku
from api.skus import GpuSku
from api.validation import (
    FieldError,
    ValidationContext,
    preferred_node_names,
    validate_create,
    validate_update,
)
from api.workspace import Runtime, Workspace
from webhook.jsonpatch import Op, diff
from webhook.review import AdmissionRequest

DENIAL_CODE = 422
DENIAL_REASON = "Invalid"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    patch: list[Op] = field(default_factory=list)
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """What ``kubectl`` prints after "denied the request: "."""
        if not self.errors:
            return ""
        if len(self.errors) == 1:
            return str(self.errors[0])
        lines = "\n".join(f"- {e}" for e in self.errors)
        return f"{len(self.errors)} problems:\n{lines}"

    @property
    def reasons(self) -> list[str]:
        """Distinct error reasons, for the denial metric."""
        return sorted({e.reason for e in self.errors})


ALLOW = Decision(allowed=True)


def mutate(request: AdmissionRequest, config: AdminConfig) -> Decision:
    """Defaults for a Workspace CREATE or UPDATE, as a JSON Patch."""
    if not request.is_workspace or request.operation not in ("CREATE", "UPDATE"):
        return ALLOW
    obj: dict[str, Any] = request.object or {}
    return Decision(allowed=True, patch=diff(obj, default(obj, config)))


def nodes_to_look_up(request: AdmissionRequest) -> list[str]:
    """Preferred nodes whose Node objects validation needs: all on create, the new ones on
    update (nodes accepted before are not re-checked). Names that cannot be node names are
    left to the syntax rule."""
    if not request.is_workspace or request.operation not in ("CREATE", "UPDATE"):
        return []
    names = [n for n in preferred_node_names(request.object) if dns1123_subdomain(n) is None]
    if request.operation == "UPDATE":
        before = set(preferred_node_names(request.old_object))
        names = [n for n in names if n not in before]
    return names


def inference_config_to_read(request: AdmissionRequest) -> str | None:
    """The ``inference.config`` ConfigMap the webhook must read: on create, and on an update
    that sets or renames it (an unchanged reference is not re-judged on every update, so the
    controller's own writes, e.g. its finalizer, never depend on the ConfigMap; the controller
    re-checks it and reports problems in status). None for names the syntax rule refuses."""
    if not request.is_workspace or request.operation not in ("CREATE", "UPDATE"):
        return None

    def name_of(obj: Any) -> str | None:
        inference = obj.get("inference") if isinstance(obj, dict) else None
        value = inference.get("config") if isinstance(inference, dict) else None
        template = inference.get("template") if isinstance(inference, dict) else None
        return value if isinstance(value, str) and template is None else None

    name = name_of(request.object)
    if name is None or dns1123_subdomain(name) is not None:
        return None
    if request.operation == "UPDATE" and name_of(request.old_object) == name:
        return None
    return name


def with_inference_config(
    decision: Decision, configmap: str, data: dict[str, Any] | None
) -> Decision:
    """``decision`` plus the problems of the ConfigMap's ``inference_config.yaml`` (``data``:
    the ConfigMap's data, None when it does not exist), and warnings for keys we ignore."""
    config, errors = inference_config.parse(configmap, data)
    if errors:
        return Decision(allowed=False, errors=(*decision.errors, *errors))
    ignored = config.ignored() if config is not None else []
    if not ignored or not decision.allowed:
        return decision
    warning = (
        f"inference.config: ConfigMap {configmap} sets {', '.join(ignored)}, which have no "
        "effect here (KAITO compatibility); you may delete them"
    )
    return replace(decision, warnings=(*decision.warnings, warning))


# The default runtime images use PyPI's torch for CUDA 13, which dropped Volta (V100, 7.0).
CUDA13_MIN = (7, 5)


def _below(sku: GpuSku, minimum: tuple[int, int]) -> bool:
    """The SKU's compute capability is known and below ``minimum``."""
    major, _, minor = (sku.compute_capability or "").partition(".")
    if not (major.isdigit() and (minor or "0").isdigit()):
        return False
    return (int(major), int(minor or "0")) < minimum


def _warnings(obj: dict[str, Any], ctx: ValidationContext) -> tuple[str, ...]:
    ws = Workspace.from_dict(obj)
    out: list[str] = []
    preset = ctx.presets.get(ws.preset_name or "")
    if preset is None:
        return ()
    sku = ctx.skus.get(ws.resource.instance_type or "")
    runtime = ws.runtime(ctx.config.default_runtime)
    if sku is not None and runtime not in ctx.config.runtime_images and _below(sku, CUDA13_MIN):
        key = "vllmImage" if runtime is Runtime.VLLM else "transformersImage"
        out.append(
            f"{sku.name} has {sku.gpu_model} GPUs (compute capability {sku.compute_capability}); "
            f"the default {runtime} image is built for CUDA 13, which needs "
            f"{CUDA13_MIN[0]}.{CUDA13_MIN[1]} or more: set {key} in the kaito-config ConfigMap "
            "to an image built for CUDA 12"
        )
    if sku is not None:
        out += cpu_warnings(preset, sku, ctx)
    if sku is not None and not ws.resource.preferred_nodes and not sku.is_cpu:
        fit = estimate(
            preset,
            shape_of_sku(sku),
            runtime,
            allowance=ctx.allowance,
        )
        if isinstance(fit, Fit) and fit.max_model_len < preset.context_length:
            out.append(
                f"{preset.name} will serve at most {fit.max_model_len} tokens of context on "
                f"{sku.name} (the model allows {preset.context_length}); choose a larger "
                "instance type for the full context"
            )
    return tuple(out)


def cpu_warnings(preset: Preset, sku: GpuSku, ctx: ValidationContext) -> list[str]:
    """CPU Workspaces (``api.cpu``): a CPU-capable preset on a GPU SKU runs on the GPU; on a
    CPU SKU, a context cut short by the node's memory."""
    if not sku.is_cpu:
        warning = cpu_preset_on_gpu_warning(
            preset, sku, ctx.skus, ctx.config.allowed_instance_types
        )
        return [warning] if warning else []
    fit = estimate_cpu(preset, sku)
    if isinstance(fit, CpuFit) and fit.max_model_len < preset.context_length:
        return [
            f"{preset.name} will serve at most {fit.max_model_len} tokens of context on "
            f"{sku.name} (the model allows {preset.context_length}; the KV cache gets "
            f"{fit.kv_cache_gib} GiB of the node's memory); choose a CPU instance type with "
            "more memory for the full context"
        ]
    return []


def validate(request: AdmissionRequest, ctx: ValidationContext) -> Decision:
    """Every problem with a Workspace CREATE or UPDATE (``ctx.nodes``: the looked-up nodes)."""
    if not request.is_workspace or request.operation not in ("CREATE", "UPDATE"):
        return ALLOW
    obj = request.object or {}
    metadata = obj.get("metadata")
    if (
        request.operation == "UPDATE"
        and isinstance(metadata, dict)
        and metadata.get("deletionTimestamp")
    ):
        return ALLOW  # never block an object on its way out (finalizer removal)
    if request.operation == "CREATE":
        errors = validate_create(obj, ctx)
    else:
        errors = validate_update(request.old_object or {}, obj, ctx)
    if errors:
        return Decision(allowed=False, errors=tuple(errors))
    return Decision(allowed=True, warnings=_warnings(obj, ctx))
