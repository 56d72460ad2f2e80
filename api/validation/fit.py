"""Does the model fit the instance type: GPU sizing (``api.sizing``) or, on a CPU SKU,
``api.cpu``'s rules; the suggestions name instance types that hold the model."""

from __future__ import annotations

from api import cpu
from api.presets import Preset
from api.sizing import Fit, estimate, fitting_skus, shape_of_sku
from api.skus import GpuSku
from api.validation.base import RUNTIME_FIELD, FieldError, ValidationContext
from api.workspace import RUNTIME_ANNOTATION, Runtime, Workspace


def _sku_suggestions(
    preset: Preset, ctx: ValidationContext, runtime: Runtime, near: GpuSku | None
) -> str:
    fits = fitting_skus(
        preset,
        ctx.skus,
        runtime,
        allowance=ctx.allowance,
        allowed=ctx.config.allowed_instance_types,
    )
    if near is not None:
        same = [p for p in fits if p[0].cloud == near.cloud]
        fits = same or fits
    if not fits:
        return f"no instance type in the catalog holds {preset.name} with the {runtime} runtime"
    shown = []
    for sku, fit in fits[:3]:
        nodes = f" x {fit.node_count} nodes" if fit.node_count > 1 else ""
        shown.append(f"{sku.name}{nodes}")
    return "use an instance type that holds it, e.g. " + ", ".join(shown)


def cpu_rules(
    ws: Workspace, preset: Preset, sku: GpuSku, ctx: ValidationContext
) -> list[FieldError]:
    """A preset on a CPU SKU (``api.cpu``): CPU-capable, runtime and node memory."""
    return [
        FieldError(p.field, p.message, p.fix, p.reason, p.value)
        for p in cpu.cpu_sku_problems(
            ws,
            preset,
            sku,
            presets=ctx.presets,
            skus=ctx.skus,
            default_runtime=ctx.config.default_runtime,
            allowed=ctx.config.allowed_instance_types,
        )
    ]


def fit_rules(
    ws: Workspace, preset: Preset, sku: GpuSku, ctx: ValidationContext
) -> list[FieldError]:
    runtime = ws.runtime(ctx.config.default_runtime)
    if not preset.supports(runtime):
        return []  # reported by the runtime rule
    fit = estimate(preset, shape_of_sku(sku), runtime, allowance=ctx.allowance)
    if isinstance(fit, Fit):
        count = ws.resource.count
        if count is not None and count < fit.node_count:
            return [
                FieldError(
                    "resource.count",
                    f"{count} is fewer than the {fit.node_count} nodes of {sku.name} that "
                    f"{preset.name} needs",
                    f"set count to {fit.node_count} or more, or remove count",
                    "count",
                    count,
                )
            ]
        return []
    if runtime is Runtime.TRANSFORMERS and preset.supports(Runtime.VLLM):
        multi = estimate(preset, shape_of_sku(sku), Runtime.VLLM, allowance=ctx.allowance)
        if isinstance(multi, Fit) and multi.node_count > 1:
            return [
                FieldError(
                    RUNTIME_FIELD,
                    f"the transformers runtime serves within one node, but {preset.name} needs "
                    f"{multi.node_count} nodes of {sku.name}",
                    f"set {RUNTIME_ANNOTATION}: vllm (multi-node), or "
                    + _sku_suggestions(preset, ctx, runtime, sku),
                    "runtime.multinode",
                    str(runtime),
                )
            ]
    return [
        FieldError(
            "resource.instanceType",
            f"is too small for {preset.name} with the {runtime} runtime: {fit.reason}",
            _sku_suggestions(preset, ctx, runtime, sku),
            "instancetype.toosmall",
            sku.name,
        )
    ]
