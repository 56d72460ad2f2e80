"""What an update may not change: the model, the instance type, the node selection."""

from __future__ import annotations

from typing import Any

from api.validation.base import FieldError, show_value
from api.workspace import LabelSelector, Workspace


def _immutable(field_path: str, old: Any, new: Any, fix: str) -> FieldError:
    return FieldError(
        field_path,
        f"is immutable (was {show_value(old)})",
        fix,
        "immutable",
        new,
    )


def _same_selector(old: LabelSelector | None, new: LabelSelector | None) -> bool:
    """Equal as KAITO reads selectors: rewriting matchLabels into single-value In expressions
    (or back) is no change."""
    if old is None or new is None:
        return old is new
    return old.same_label_map(new)


def update_errors(old: Workspace, new: Workspace) -> list[FieldError]:
    """What an update may not change: the model, the instance type, the node selection."""
    out: list[FieldError] = []
    recreate = "delete and re-create the Workspace to change it"
    old_inf, new_inf = old.inference, new.inference
    old_kind = (
        None
        if old_inf is None
        else ("preset" if old_inf.preset else "template" if old_inf.template is not None else None)
    )
    new_kind = (
        None
        if new_inf is None
        else ("preset" if new_inf.preset else "template" if new_inf.template is not None else None)
    )
    if old_kind and new_kind and old_kind != new_kind:
        out.append(
            FieldError(
                f"inference.{new_kind}",
                f"cannot replace inference.{old_kind} on update",
                recreate,
                "immutable",
            )
        )
    if old_inf and new_inf and old_inf.preset and new_inf.preset:
        if old_inf.preset.name != new_inf.preset.name:
            out.append(
                _immutable(
                    "inference.preset.name", old_inf.preset.name, new_inf.preset.name, recreate
                )
            )
        if (old_inf.preset.access_mode or "public") != (new_inf.preset.access_mode or "public"):
            out.append(
                _immutable(
                    "inference.preset.accessMode",
                    old_inf.preset.access_mode,
                    new_inf.preset.access_mode,
                    recreate,
                )
            )
    if old.resource.instance_type != new.resource.instance_type:
        out.append(
            _immutable(
                "resource.instanceType",
                old.resource.instance_type,
                new.resource.instance_type,
                recreate,
            )
        )
    if not _same_selector(old.resource.label_selector, new.resource.label_selector):
        out.append(
            _immutable(
                "resource.labelSelector",
                None
                if old.resource.label_selector is None
                else old.resource.label_selector.to_dict(),
                None
                if new.resource.label_selector is None
                else new.resource.label_selector.to_dict(),
                recreate,
            )
        )
    if old.resource.count != new.resource.count:
        out.append(_immutable("resource.count", old.resource.count, new.resource.count, recreate))
    return out
