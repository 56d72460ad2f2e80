"""Rules on ``inference``: the preset (catalog, allow-list, private image, pull secrets,
model access), the Pod template, the runtime annotation and ``inference.config``."""

from __future__ import annotations

from collections.abc import Mapping

from api import names
from api.presets import Preset
from api.validation.base import (
    RUNTIME_FIELD,
    FieldError,
    ValidationContext,
    did_you_mean,
    fmt_list,
    secret_rules,
)
from api.workspace import (
    MODEL_ACCESS_SECRET_KEY,
    RUNTIME_ANNOTATION,
    AccessMode,
    Runtime,
    Workspace,
)


def runtime_rules(ws: Workspace, preset: Preset | None) -> list[FieldError]:
    value = ws.runtime_annotation
    if value is None:
        return []
    choices = " or ".join(r.value for r in Runtime)
    try:
        runtime = Runtime(value)
    except ValueError:
        return [
            FieldError(
                RUNTIME_FIELD,
                "is not a runtime",
                f"set the annotation {RUNTIME_ANNOTATION} to {choices}",
                "runtime.invalid",
                value,
            )
        ]
    if preset is not None and not preset.supports(runtime):
        ok = " or ".join(str(r) for r in preset.runtimes)
        return [
            FieldError(
                RUNTIME_FIELD,
                f"preset {preset.name} is not served by the {runtime} runtime",
                f"set {RUNTIME_ANNOTATION} to {ok}",
                "runtime.unsupported",
                value,
            )
        ]
    return []


def inference_config_rules(ws: Workspace) -> list[FieldError]:
    """``inference.config``: a ConfigMap name, for preset Workspaces (its contents are judged by
    ``api.inference_config`` once the webhook or the reconciler has read the ConfigMap)."""
    name = ws.inference.config if ws.inference else None
    if name is None:
        return []
    problem = names.dns1123_subdomain(name)
    if problem:
        return [
            FieldError(
                "inference.config",
                f"is not a ConfigMap name: it {problem}",
                "use the name of a ConfigMap in the Workspace's namespace",
                "inferenceconfig.name",
                name,
            )
        ]
    if ws.inference is not None and ws.inference.template is not None:
        return [
            FieldError(
                "inference.config",
                "applies to preset Workspaces only; a template sets its container's arguments "
                "itself",
                "remove inference.config, or put the settings in inference.template's args",
                "inferenceconfig.template",
                name,
            )
        ]
    return []


def preset_rules(ws: Workspace, ctx: ValidationContext, *, create: bool) -> list[FieldError]:
    spec = ws.inference.preset if ws.inference else None
    if spec is None:
        return []
    out: list[FieldError] = []
    preset = ctx.presets.get(spec.name)
    if create and preset is None:
        out.append(
            FieldError(
                "inference.preset.name",
                "is not a model in the preset catalog"
                + did_you_mean(spec.name, ctx.presets.names()),
                f"use one of {fmt_list(ctx.presets.names(), 40)}",
                "preset.unknown",
                spec.name,
            )
        )
    elif create and not ctx.config.allows_preset(spec.name):
        allowed = sorted(ctx.config.allowed_presets or ())
        out.append(
            FieldError(
                "inference.preset.name",
                "is not allowed in this cluster",
                f"use one of {fmt_list(allowed)}, or ask the cluster admin to add it to "
                "allowedPresets",
                "preset.notallowed",
                spec.name,
            )
        )
    image = spec.preset_options.image
    if spec.access_mode == AccessMode.PRIVATE and not image:
        out.append(
            FieldError(
                "inference.preset.presetOptions.image",
                "is required when accessMode is private",
                "set presetOptions.image to the private model image, or remove accessMode",
                "preset.image",
            )
        )
    if spec.access_mode == AccessMode.PUBLIC and image:
        out.append(
            FieldError(
                "inference.preset.accessMode",
                "is public, but presetOptions.image names a private model image",
                "set accessMode: private to use the image, or remove presetOptions.image",
                "preset.image",
                spec.access_mode,
            )
        )
    if image:
        problem = names.image_reference(image)
        if problem:
            out.append(
                FieldError(
                    "inference.preset.presetOptions.image",
                    problem,
                    "write an image reference such as myregistry.azurecr.io/models/falcon-7b:0.1",
                    "preset.image",
                    image,
                )
            )
    out += secret_rules(
        spec.preset_options.image_pull_secrets, "inference.preset.presetOptions.imagePullSecrets"
    )
    return out


def model_access_rules(ws: Workspace, ctx: ValidationContext) -> list[FieldError]:
    """``presetOptions.modelAccessSecret``: a Secret name; required for a gated preset unless
    the weights come from a private image (the runtime cannot download a gated model without
    a token)."""
    spec = ws.inference.preset if ws.inference else None
    if spec is None:
        return []
    where = "inference.preset.presetOptions.modelAccessSecret"
    secret = spec.preset_options.model_access_secret
    if secret is not None:
        problem = names.dns1123_subdomain(secret)
        if problem:
            return [
                FieldError(
                    where,
                    f"is not a Secret name: it {problem}",
                    "use the name of a Secret in the Workspace's namespace",
                    "preset.secret",
                    secret,
                )
            ]
        return []
    preset = ctx.presets.get(spec.name)
    if preset is None or not preset.gated or spec.preset_options.image:
        return []
    return [
        FieldError(
            where,
            f"is required for {preset.name}, a gated Hugging Face model ({preset.hf_repo}): "
            "the runtime needs an access token to download it",
            "accept the model's licence on huggingface.co, then `kubectl create secret generic "
            f"NAME --from-literal={MODEL_ACCESS_SECRET_KEY}=hf_...` in the Workspace's "
            "namespace and set presetOptions.modelAccessSecret: NAME (or serve a private "
            "image with accessMode: private and presetOptions.image)",
            "preset.gated",
        )
    ]


def template_rules(ws: Workspace) -> list[FieldError]:
    template = ws.inference.template if ws.inference else None
    if template is None:
        return []
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    ok = (
        isinstance(containers, list)
        and bool(containers)
        and all(
            isinstance(c, Mapping)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("image"), str)
            for c in containers
        )
    )
    if ok:
        return []
    return [
        FieldError(
            "inference.template.spec.containers",
            "a Pod template needs at least one container with a name and an image",
            "add spec.containers: [{name: ..., image: ...}] to the template",
            "template",
        )
    ]
