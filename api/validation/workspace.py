"""The whole Workspace: the schema first, then the semantic rules of each part
(``inference``, ``adapters``, ``resource``) and, on update, the immutable fields."""

from __future__ import annotations

from typing import Any

from api import names
from api.errors import WorkspaceParseError
from api.presets import Preset
from api.validation.adapters import adapter_rules
from api.validation.base import FieldError, ValidationContext
from api.validation.inference import (
    inference_config_rules,
    model_access_rules,
    preset_rules,
    runtime_rules,
    template_rules,
)
from api.validation.resource import node_rules, resource_rules, selector_rules
from api.validation.schema import schema_errors
from api.validation.updates import update_errors
from api.workspace import Workspace


def name_rules(ws: Workspace) -> list[FieldError]:
    name = ws.metadata.name
    if not name:
        return []
    problem = names.dns1035_label(name)
    if problem is None:
        return []
    return [
        FieldError(
            "metadata.name",
            f"{problem} (the Workspace's name is its Service's name)",
            "rename it, e.g. workspace-falcon-7b",
            "name",
            name,
        )
    ]


def semantic_errors(
    ws: Workspace, ctx: ValidationContext, *, old: Workspace | None = None
) -> list[FieldError]:
    """The rules beyond the schema. ``old`` is the stored object on update."""
    create = old is None
    out: list[FieldError] = []
    if create:
        out += name_rules(ws)
    inference = ws.inference
    preset: Preset | None = None
    if inference is None or (inference.preset is None and inference.template is None):
        out.append(
            FieldError(
                "inference",
                "sets neither preset nor template",
                "set inference.preset.name to a catalog model (e.g. falcon-7b), or "
                "inference.template to a Pod template",
                "inference.oneof",
            )
        )
    elif inference.preset is not None and inference.template is not None:
        out.append(
            FieldError(
                "inference",
                "sets both preset and template",
                "keep one of inference.preset and inference.template",
                "inference.oneof",
            )
        )
    if inference is not None and inference.preset is not None:
        preset = ctx.presets.get(inference.preset.name)
        out += preset_rules(ws, ctx, create=create)
        old_preset = old.inference.preset if old is not None and old.inference else None
        if (
            create
            or old_preset is None
            or old_preset.preset_options != inference.preset.preset_options
        ):
            out += model_access_rules(ws, ctx)
    if inference is not None and inference.template is not None:
        out += template_rules(ws)
    old_adapters = old.inference.adapters if old is not None and old.inference else None
    if inference is not None and (create or inference.adapters != old_adapters):
        out += adapter_rules(ws, ctx)  # unchanged adapters are not re-judged by new limits
    out += runtime_rules(ws, preset)
    out += inference_config_rules(ws)
    out += selector_rules(ws)

    check_fit = create or (
        old is not None
        and (
            old.runtime(ctx.config.default_runtime) != ws.runtime(ctx.config.default_runtime)
            or old.resource.count != ws.resource.count
        )
    )
    out += resource_rules(ws, preset, ctx, create=create, check_fit=check_fit)
    added = (
        None
        if old is None
        else set(ws.resource.preferred_nodes) - set(old.resource.preferred_nodes)
    )
    out += node_rules(ws, ctx, added)
    return out


def _parse(obj: Any) -> tuple[Workspace | None, list[FieldError]]:
    errors = schema_errors(obj)
    if errors:
        return None, errors
    try:
        return Workspace.from_dict(obj), []
    except WorkspaceParseError as exc:  # schema and model disagree: a bug, but say where
        return None, [FieldError(exc.path, exc.message, "correct the value", "schema")]


def validate_create(obj: Any, ctx: ValidationContext) -> list[FieldError]:
    """Every problem with a new Workspace (the schema first; semantics once it parses)."""
    ws, errors = _parse(obj)
    if ws is None:
        return errors
    return semantic_errors(ws, ctx)


def validate_update(old_obj: Any, new_obj: Any, ctx: ValidationContext) -> list[FieldError]:
    """Every problem with an update: the schema, immutable fields and the rules for changes.

    Catalog and allow-list checks of fields that cannot change are not repeated (an admin
    narrowing the allow-list does not block adapter updates of existing Workspaces)."""
    new, errors = _parse(new_obj)
    if new is None:
        return errors
    try:
        old = Workspace.from_dict(old_obj)
    except WorkspaceParseError:
        return semantic_errors(new, ctx)
    return update_errors(old, new) + semantic_errors(new, ctx, old=old)
