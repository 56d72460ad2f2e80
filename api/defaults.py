"""``default(ws, config) -> ws``: the admin defaults applied to a Workspace dict (pure).

Returns a new dict; the input is never changed. It tolerates any shape (the mutating webhook
runs before the apiserver checks the schema): a part of the wrong type is left alone for the
validator to report.

Defaults:

* ``metadata.annotations["kaito.sh/runtime"]``: ``config.default_runtime`` when absent;
* ``inference.adapters[*].strength``: ``config.default_adapter_strength`` when absent; a number
  (``strength: 0.2`` unquoted in YAML) becomes the string ``"0.2"`` so the object meets the
  schema, which wants a decimal string;
* ``resource.instanceType``: when the Workspace gives neither an instance type nor preferred
  nodes, the admin's ``config.default_instance_type``, else ``Standard_NC12s_v3`` (the seed
  API's default, ``api.workspace.DEFAULT_INSTANCE_TYPE``). A Workspace with ``preferredNodes``
  keeps no instance type (nothing is provisioned for it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from api.config import DEFAULT_CONFIG, AdminConfig
from api.workspace import DEFAULT_INSTANCE_TYPE, RUNTIME_ANNOTATION


def _strength_text(value: float | int) -> str:
    return str(value)


def default(ws: Mapping[str, Any], config: AdminConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """A defaulted deep copy of ``ws``."""
    out: dict[str, Any] = copy.deepcopy(dict(ws))

    metadata = out.setdefault("metadata", {})
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if annotations is None:
            annotations = metadata["annotations"] = {}
        if isinstance(annotations, dict) and RUNTIME_ANNOTATION not in annotations:
            annotations[RUNTIME_ANNOTATION] = config.default_runtime.value

    inference = out.get("inference")
    adapters = inference.get("adapters") if isinstance(inference, dict) else None
    if isinstance(adapters, list):
        for adapter in adapters:
            if not isinstance(adapter, dict):
                continue
            strength = adapter.get("strength")
            if strength is None:
                adapter["strength"] = config.default_adapter_strength
            elif isinstance(strength, int | float) and not isinstance(strength, bool):
                adapter["strength"] = _strength_text(strength)

    resource = out.get("resource")
    if (
        isinstance(resource, dict)
        and not resource.get("instanceType")
        and not resource.get("preferredNodes")
    ):
        resource["instanceType"] = config.default_instance_type or DEFAULT_INSTANCE_TYPE
    return out
