"""The admission rules, run again by the reconciler before it provisions anything (pure).

A Workspace can reach the apiserver without our webhook seeing it: created while the webhook
was restarting or removed, or with admission switched off. The reconciler therefore judges
every Workspace with the same pure functions as ``/validate`` (``api.validation``), after the
same defaults as ``/mutate``, and reports the problems as ``InvalidSpec`` with the webhook's
own messages. Preferred nodes are not judged here: that they exist and fit is the node plan's
job (a node may come and go after admission), and the plan says so in status. Problems the
sizing reports with a reason of its own (``NoFit``, ``UnknownPreset``, ``UnknownInstanceType``,
``RuntimeNotSupported``) are left to it: it runs next, also before anything is provisioned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from api.config import AdminConfig
from api.defaults import default
from api.limits import too_complex
from api.presets import PresetCatalog
from api.skus import SkuCatalog
from api.validation import FieldError, ValidationContext, validate_create

LEFT_TO_SIZING = frozenset(
    {"instancetype.toosmall", "instancetype.unknown", "preset.unknown", "runtime.unsupported"}
)
"""Rule reasons (``FieldError.reason``) that ``reconciler.needs`` reports itself."""


def describe(errors: Sequence[FieldError]) -> str:
    """The problems as the webhook words them (``webhook.decisions.Decision.message``)."""
    if len(errors) == 1:
        return str(errors[0])
    lines = "\n".join(f"- {e}" for e in errors)
    return f"{len(errors)} problems:\n{lines}"


def spec_problems(
    ws_obj: Mapping[str, Any],
    *,
    config: AdminConfig,
    presets: PresetCatalog,
    skus: SkuCatalog,
) -> str:
    """Why the Workspace must not be provisioned, in the webhook's words; ``""`` when valid.

    ``skus`` is the packaged catalog; the admin ConfigMap's extra SKUs are merged in here as
    the webhook does."""
    why = too_complex(ws_obj)
    if why:
        return f"(object): {why}"
    ctx = ValidationContext(presets=presets, skus=config.sku_catalog(skus), config=config)
    errors = [
        e for e in validate_create(default(ws_obj, config), ctx) if e.reason not in LEFT_TO_SIZING
    ]
    return describe(errors) if errors else ""
