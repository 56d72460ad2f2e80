"""Workspace validation: the schema (``jsonschema``) and the semantic rules, as pure functions.

``validate_create(obj, ctx)`` and ``validate_update(old, new, ctx)`` return every problem at
once as a list of ``FieldError`` (empty when the object is fine). Each error names the field,
the bad value and the fix; ``str(error)`` is the sentence shown to ``kubectl`` users, and
``error.reason`` a short code for metrics.

Node facts for ``resource.preferredNodes`` come in through ``ValidationContext.nodes`` (the
webhook reads the Node objects; this module performs no I/O). Without them the node checks
are skipped.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from api import cpu, names
from api.config import DEFAULT_CONFIG, AdminConfig
from api.errors import QuantityError, StrengthError, WorkspaceParseError
from api.presets import Preset, PresetCatalog, load_presets
from api.quantity import parse_count
from api.schema import closed_schema
from api.sizing import DEFAULT_ALLOWANCE, Allowance, Fit, estimate, fitting_skus, shape_of_sku
from api.skus import GpuSku, SkuCatalog, load_skus
from api.workspace import (
    MODEL_ACCESS_SECRET_KEY,
    RUNTIME_ANNOTATION,
    AccessMode,
    AdapterSpec,
    LabelSelector,
    Runtime,
    SelectorOperator,
    Workspace,
    parse_strength,
)

GPU_RESOURCE = "nvidia.com/gpu"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""MiB per GPU, as NVIDIA GPU feature discovery labels nodes."""

ADAPTER_IMAGE_EXAMPLE = "myregistry.azurecr.io/adapters/falcon-7b-adapter:0.1"

_MISSING: Any = object()
RUNTIME_FIELD = f"metadata.annotations[{RUNTIME_ANNOTATION}]"


@dataclass(frozen=True)
class FieldError:
    """One problem: the field's path, the bad value, what is wrong and how to fix it."""

    field: str
    message: str
    fix: str
    reason: str
    value: Any = _MISSING

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {_show(self.value)})"
        return f"{self.field}: {self.message}{shown}; fix: {self.fix}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - default=str handles the rest
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class NodeFacts:
    """What validation needs from a Node: its labels and allocatable GPUs."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_allocatable: int = 0
    gpu_memory_mib: int | None = None

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Read a v1 Node (a plain dict as the API returns it)."""
        meta = node.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            gpus = parse_count(str(allocatable.get(GPU_RESOURCE, "0")))
        except QuantityError:
            gpus = 0
        memory = labels.get(GPU_MEMORY_LABEL, "")
        return cls(
            name=str(meta.get("name", "")),
            labels=labels,
            gpu_allocatable=gpus,
            gpu_memory_mib=int(memory) if memory.isdigit() else None,
        )


@dataclass(frozen=True)
class ValidationContext:
    """Everything the rules consult besides the object itself."""

    presets: PresetCatalog
    skus: SkuCatalog
    config: AdminConfig = DEFAULT_CONFIG
    allowance: Allowance = DEFAULT_ALLOWANCE
    nodes: Mapping[str, NodeFacts | None] | None = None
    """Preferred node name → facts (None: the node does not exist). None: not looked up."""

    @classmethod
    def default(cls, config: AdminConfig = DEFAULT_CONFIG, **kw: Any) -> ValidationContext:
        """The packaged catalogs, with the config's extra SKUs merged in."""
        return cls(
            presets=load_presets(), skus=config.sku_catalog(load_skus()), config=config, **kw
        )


# ----------------------------------------------------------------------------- schema


@functools.cache
def _schema_validator() -> jsonschema.Draft7Validator:
    schema = closed_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def schema_errors(obj: Any) -> list[FieldError]:
    """Every way ``obj`` breaks the Workspace schema (unknown fields included)."""
    out = []
    errors = sorted(_schema_validator().iter_errors(obj), key=lambda e: list(map(str, e.path)))
    for err in errors:
        where = _path(err.absolute_path)
        kind = err.validator
        if kind == "required":
            missing = err.message.split("'")[1] if "'" in err.message else "?"
            out.append(FieldError(_join(where, missing), "is required", f"add {missing}", "schema"))
        elif kind == "additionalProperties":
            known = sorted((err.schema.get("properties") or {}).keys())
            extra = sorted(set(err.instance) - set(known)) if isinstance(err.instance, dict) else []
            for name in extra or ["?"]:
                out.append(
                    FieldError(
                        _join(where, name),
                        "is not a field of a Workspace",
                        f"remove it or use one of the fields here: {', '.join(known)}",
                        "schema",
                    )
                )
        elif kind == "type":
            want = err.validator_value
            fix = f"write {'an' if str(want)[:1] in 'aeiou' else 'a'} {want}"
            if where.endswith("strength"):
                fix = 'quote the decimal in YAML, e.g. strength: "0.2"'
            elif not where:
                fix = "send a Workspace object"
            out.append(
                FieldError(
                    where or "(object)", f"must be of type {want}", fix, "schema", err.instance
                )
            )
        elif kind == "enum":
            allowed = ", ".join(map(str, err.validator_value))
            out.append(
                FieldError(
                    where,
                    f"must be one of {allowed}",
                    f"use one of {allowed}",
                    "schema",
                    err.instance,
                )
            )
        else:
            limit = err.validator_value
            fixes = {
                "minimum": f"use a value of at least {limit}",
                "maximum": f"use a value of at most {limit}",
                "maxItems": f"list at most {limit} items",
                "maxLength": f"use at most {limit} characters",
            }
            out.append(
                FieldError(
                    where or "(object)",
                    f"violates the schema ({kind} {limit})",
                    fixes.get(str(kind), "change the value to meet the schema"),
                    "schema",
                    err.instance if kind not in ("maxItems", "maxLength") else _MISSING,
                )
            )
    return out


# ----------------------------------------------------------------------------- helpers


def preferred_node_names(obj: Any) -> list[str]:
    """The ``resource.preferredNodes`` of any dict, tolerating a wrong shape (for the webhook,
    which looks the nodes up before validating)."""
    resource = obj.get("resource") if isinstance(obj, Mapping) else None
    nodes = resource.get("preferredNodes") if isinstance(resource, Mapping) else None
    if not isinstance(nodes, list):
        return []
    return list(dict.fromkeys(n for n in nodes if isinstance(n, str)))


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> list[str]:
    """The parts of ``selector`` that ``labels`` fail, as ``key=value`` / expression strings."""
    failed = [f"{k}={v}" for k, v in selector.match_labels.items() if labels.get(k) != v]
    for expr in selector.match_expressions:
        present = expr.key in labels
        value = labels.get(expr.key)
        if expr.operator == SelectorOperator.IN:
            ok = present and value in expr.values
        elif expr.operator == SelectorOperator.NOT_IN:
            ok = not present or value not in expr.values
        elif expr.operator == SelectorOperator.EXISTS:
            ok = present
        elif expr.operator == SelectorOperator.DOES_NOT_EXIST:
            ok = not present
        else:
            ok = False
        if not ok:
            shown = f" {list(expr.values)}" if expr.values else ""
            failed.append(f"{expr.key} {expr.operator}{shown}")
    return failed


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(lowered[c] for c in close)}?)" if close else ""


def _fmt_list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------------------- rules


def _name_rules(ws: Workspace) -> list[FieldError]:
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


def _runtime_rules(ws: Workspace, preset: Preset | None) -> list[FieldError]:
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


def _secret_rules(secrets: Sequence[str], where: str) -> list[FieldError]:
    out = []
    for i, secret in enumerate(secrets):
        problem = names.dns1123_subdomain(secret)
        if problem:
            out.append(
                FieldError(
                    f"{where}[{i}]",
                    f"is not a Secret name: it {problem}",
                    "use the name of a Secret in the Workspace's namespace",
                    "secret",
                    secret,
                )
            )
    return out


def _inference_config_rules(ws: Workspace) -> list[FieldError]:
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


def _preset_rules(ws: Workspace, ctx: ValidationContext, *, create: bool) -> list[FieldError]:
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
                + _did_you_mean(spec.name, ctx.presets.names()),
                f"use one of {_fmt_list(ctx.presets.names(), 40)}",
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
                f"use one of {_fmt_list(allowed)}, or ask the cluster admin to add it to "
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
    out += _secret_rules(
        spec.preset_options.image_pull_secrets, "inference.preset.presetOptions.imagePullSecrets"
    )
    return out


def _model_access_rules(ws: Workspace, ctx: ValidationContext) -> list[FieldError]:
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


def _adapter_rules(ws: Workspace, ctx: ValidationContext) -> list[FieldError]:
    assert ws.inference is not None
    adapters: Sequence[AdapterSpec] = ws.inference.adapters
    out: list[FieldError] = []
    if not adapters:
        return out
    if ws.inference.template is not None:
        out.append(
            FieldError(
                "inference.adapters",
                "adapters apply to preset models only",
                "remove adapters, or serve a preset with inference.preset",
                "adapters.template",
            )
        )
    limit = ctx.config.max_adapters
    if len(adapters) > limit:
        out.append(
            FieldError(
                "inference.adapters",
                f"lists {len(adapters)} adapters, more than the {limit} allowed",
                f"keep at most {limit} adapters",
                "adapters.count",
            )
        )
    seen: dict[str, int] = {}
    for i, adapter in enumerate(adapters):
        where = f"inference.adapters[{i}]"
        name = adapter.source.name
        problem = names.dns1123_label(name)
        if problem:
            out.append(
                FieldError(
                    f"{where}.source.name",
                    f"{problem} (it names the adapter's init container)",
                    "use a DNS-1123 label such as falcon-7b-adapter",
                    "adapters.name",
                    name,
                )
            )
        elif name in seen:
            out.append(
                FieldError(
                    f"{where}.source.name",
                    f"repeats the name of inference.adapters[{seen[name]}]",
                    "give every adapter a different name",
                    "adapters.name",
                    name,
                )
            )
        else:
            seen[name] = i
        image = adapter.source.image
        if not image:
            out.append(
                FieldError(
                    f"{where}.source.image",
                    "is required: only images are supported as adapter sources",
                    f"set source.image to an image with the adapter files under /data, e.g. "
                    f"{ADAPTER_IMAGE_EXAMPLE}",
                    "adapters.image",
                )
            )
        elif names.is_placeholder(image):
            out.append(
                FieldError(
                    f"{where}.source.image",
                    "is the documentation's placeholder, not an image",
                    f"replace {image} with your adapter image (files under /data), e.g. "
                    f"{ADAPTER_IMAGE_EXAMPLE}",
                    "adapters.image",
                    image,
                )
            )
        else:
            problem = names.image_reference(image)
            if problem:
                out.append(
                    FieldError(
                        f"{where}.source.image",
                        problem,
                        f"write an image reference such as {ADAPTER_IMAGE_EXAMPLE}",
                        "adapters.image",
                        image,
                    )
                )
        out += _secret_rules(adapter.source.image_pull_secrets, f"{where}.source.imagePullSecrets")
        if adapter.strength is not None:
            try:
                parse_strength(adapter.strength)
            except StrengthError as exc:
                out.append(
                    FieldError(
                        f"{where}.strength",
                        str(exc).split(";")[0],
                        'use a decimal string from "0" to "1", e.g. "0.2"',
                        "adapters.strength",
                        adapter.strength,
                    )
                )
    return out


def _template_rules(ws: Workspace) -> list[FieldError]:
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


def _selector_rules(ws: Workspace) -> list[FieldError]:
    sel = ws.resource.label_selector
    base = "resource.labelSelector"
    if sel is None:
        return [
            FieldError(
                base,
                "is required",
                "add labelSelector.matchLabels, e.g. {apps: falcon-7b}",
                "selector",
            )
        ]
    out: list[FieldError] = _label_map_rules(ws)
    for key, value in sel.match_labels.items():
        problem = names.label_key(key)
        if problem:
            out.append(
                FieldError(
                    f"{base}.matchLabels",
                    f"label key {key!r} {problem}",
                    "use a valid label key such as apps or example.com/gpu",
                    "selector",
                    key,
                )
            )
        problem = names.label_value(value)
        if problem:
            out.append(
                FieldError(
                    f"{base}.matchLabels.{key}",
                    f"label value {problem}",
                    "use a valid label value such as falcon-7b",
                    "selector",
                    value,
                )
            )
    for i, expr in enumerate(sel.match_expressions):
        where = f"{base}.matchExpressions[{i}]"
        problem = names.label_key(expr.key)
        if problem:
            out.append(
                FieldError(f"{where}.key", problem, "use a valid label key", "selector", expr.key)
            )
        for value in expr.values:
            problem = names.label_value(value)
            if problem:
                out.append(
                    FieldError(
                        f"{where}.values",
                        f"label value {problem}",
                        "use a valid label value such as falcon-7b",
                        "selector",
                        value,
                    )
                )
        if expr.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not expr.values:
            out.append(
                FieldError(
                    f"{where}.values",
                    f"must not be empty for operator {expr.operator}",
                    "list at least one value",
                    "selector",
                )
            )
        if (
            expr.operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST)
            and expr.values
        ):
            out.append(
                FieldError(
                    f"{where}.values",
                    f"must be empty for operator {expr.operator}",
                    "remove values",
                    "selector",
                    list(expr.values),
                )
            )
    return out


def _label_map_rules(ws: Workspace) -> list[FieldError]:
    """The selector as KAITO reads it (a label map). Without preferredNodes the controller
    labels the nodes it provisions with that map, so it must hold a label and every expression
    must be part of it (``In`` with one value); NotIn, Exists, DoesNotExist and ``In`` with
    several values are refused there, naming the expression. With preferredNodes the selector
    only has to match the nodes, and any expression is fine."""
    sel = ws.resource.label_selector
    if sel is None:
        return []
    base = "resource.labelSelector"
    example = f"matchLabels: {{apps: {ws.name or 'my-workspace'}}}"
    if ws.resource.preferred_nodes:
        if sel.match_labels or sel.match_expressions:
            return []
        return [
            FieldError(
                base,
                "selects nothing (the Workspace's Pods select its nodes by it)",
                f"add a label the preferred nodes carry, e.g. {example}",
                "selector",
            )
        ]
    out: list[FieldError] = []
    for i, why in sel.label_map_problems():
        expr = sel.match_expressions[i]
        out.append(
            FieldError(
                f"{base}.matchExpressions[{i}]",
                f"cannot label the GPU nodes the controller provisions: {why}",
                f"use matchLabels {{{expr.key}: VALUE}} (or operator In with one value), or "
                "list prepared nodes in resource.preferredNodes",
                "selector.labelmap",
                expr.to_dict(),
            )
        )
    if not sel.label_map() and not out:
        out.append(
            FieldError(
                f"{base}.matchLabels",
                "must list at least one label (the controller labels the GPU nodes it "
                "provisions with them)",
                f"add a label, e.g. {example}",
                "selector",
            )
        )
    return out


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


def _resource_rules(
    ws: Workspace, preset: Preset | None, ctx: ValidationContext, *, create: bool, check_fit: bool
) -> list[FieldError]:
    res = ws.resource
    out: list[FieldError] = []
    nodes = res.preferred_nodes
    name = res.instance_type
    sku: GpuSku | None = None
    if not name:
        if not nodes:
            out.append(
                FieldError(
                    "resource.instanceType",
                    "is required unless resource.preferredNodes lists prepared GPU nodes",
                    "set instanceType to a GPU SKU, e.g. Standard_NC12s_v3, or list preferredNodes",
                    "instancetype.missing",
                )
            )
    else:
        sku = ctx.skus.get(name)
        if sku is None and not nodes and create:
            out.append(
                FieldError(
                    "resource.instanceType",
                    "is not a GPU instance type this cluster knows"
                    + _did_you_mean(name, ctx.skus.names()),
                    "use a SKU of the catalog (e.g. Standard_NC12s_v3, g5.12xlarge), or ask "
                    "the cluster admin to add it to extraSKUs",
                    "instancetype.unknown",
                    name,
                )
            )
        elif sku is not None and create and not ctx.config.allows_instance_type(sku.name):
            allowed = sorted(ctx.config.allowed_instance_types or ())
            out.append(
                FieldError(
                    "resource.instanceType",
                    "is not allowed in this cluster",
                    f"use one of {_fmt_list(allowed)}",
                    "instancetype.notallowed",
                    name,
                )
            )
        elif sku is not None and preset is not None and check_fit and sku.is_cpu:
            out += _cpu_rules(ws, preset, sku, ctx)
        elif sku is not None and preset is not None and not nodes and check_fit:
            out += _fit_rules(ws, preset, sku, ctx)

    seen: set[str] = set()
    for i, node in enumerate(nodes):
        problem = names.dns1123_subdomain(node)
        if problem:
            out.append(
                FieldError(
                    f"resource.preferredNodes[{i}]",
                    f"is not a node name: it {problem}",
                    "list node names as `kubectl get nodes` shows them",
                    "nodes.syntax",
                    node,
                )
            )
        elif node in seen:
            out.append(
                FieldError(
                    f"resource.preferredNodes[{i}]",
                    "is listed twice",
                    "list each node once",
                    "nodes.syntax",
                    node,
                )
            )
        seen.add(node)
    if res.count is not None and nodes and not name and res.count > len(set(nodes)):
        out.append(
            FieldError(
                "resource.count",
                f"asks for {res.count} nodes but preferredNodes lists {len(set(nodes))} and "
                "there is no instanceType to provision the rest",
                "lower count, list more preferred nodes, or set instanceType",
                "count",
                res.count,
            )
        )
    return out


def _cpu_rules(
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


def _fit_rules(
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


def _node_rules(ws: Workspace, ctx: ValidationContext, only: set[str] | None) -> list[FieldError]:
    if ctx.nodes is None:
        return []
    out: list[FieldError] = []
    selector = ws.resource.label_selector or LabelSelector()
    for i, name in enumerate(ws.resource.preferred_nodes):
        if only is not None and name not in only:
            continue
        where = f"resource.preferredNodes[{i}]"
        if name not in ctx.nodes:
            continue
        facts = ctx.nodes[name]
        if facts is None:
            out.append(
                FieldError(
                    where,
                    "names a node that does not exist",
                    "list existing nodes (see `kubectl get nodes`)",
                    "nodes.missing",
                    name,
                )
            )
            continue
        failed = selector_matches(selector, facts.labels)
        if failed:
            fix = "label the node to match resource.labelSelector"
            plain = [f for f in failed if "=" in f and " " not in f]
            if plain:
                fix = f"kubectl label node {name} {' '.join(plain)}"
            out.append(
                FieldError(
                    where,
                    f"node {name} does not match resource.labelSelector ({', '.join(failed)})",
                    fix,
                    "nodes.labels",
                    name,
                )
            )
        if facts.gpu_allocatable <= 0 and not cpu.serves_on_cpu(ws, ctx.presets, ctx.skus):
            out.append(
                FieldError(
                    where,
                    f"node {name} reports no {GPU_RESOURCE} in status.allocatable",
                    "install the GPU device plugin on the node so that its allocatable "
                    f"{GPU_RESOURCE} is above zero, or choose another node (a CPU-capable "
                    "preset runs on CPU nodes when resource.instanceType names their CPU SKU)",
                    "nodes.gpu",
                    name,
                )
            )
    return out


def semantic_errors(
    ws: Workspace, ctx: ValidationContext, *, old: Workspace | None = None
) -> list[FieldError]:
    """The rules beyond the schema. ``old`` is the stored object on update."""
    create = old is None
    out: list[FieldError] = []
    if create:
        out += _name_rules(ws)
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
        out += _preset_rules(ws, ctx, create=create)
        old_preset = old.inference.preset if old is not None and old.inference else None
        if (
            create
            or old_preset is None
            or old_preset.preset_options != inference.preset.preset_options
        ):
            out += _model_access_rules(ws, ctx)
    if inference is not None and inference.template is not None:
        out += _template_rules(ws)
    old_adapters = old.inference.adapters if old is not None and old.inference else None
    if inference is not None and (create or inference.adapters != old_adapters):
        out += _adapter_rules(ws, ctx)  # unchanged adapters are not re-judged by new limits
    out += _runtime_rules(ws, preset)
    out += _inference_config_rules(ws)
    out += _selector_rules(ws)

    check_fit = create or (
        old is not None
        and (
            old.runtime(ctx.config.default_runtime) != ws.runtime(ctx.config.default_runtime)
            or old.resource.count != ws.resource.count
        )
    )
    out += _resource_rules(ws, preset, ctx, create=create, check_fit=check_fit)
    added = (
        None
        if old is None
        else set(ws.resource.preferred_nodes) - set(old.resource.preferred_nodes)
    )
    out += _node_rules(ws, ctx, added)
    return out


def _immutable(field_path: str, old: Any, new: Any, fix: str) -> FieldError:
    return FieldError(
        field_path,
        f"is immutable (was {_show(old)})",
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
