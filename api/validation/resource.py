"""Rules on ``resource``: the label selector, the instance type, the preferred nodes (their
names and, when the webhook looked them up, their labels and GPUs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api import cpu, names
from api.presets import Preset
from api.skus import GpuSku
from api.validation.base import GPU_RESOURCE, FieldError, ValidationContext, did_you_mean, fmt_list
from api.validation.fit import cpu_rules, fit_rules
from api.workspace import LabelSelector, SelectorOperator, Workspace


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


def selector_rules(ws: Workspace) -> list[FieldError]:
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


def resource_rules(
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
                    + did_you_mean(name, ctx.skus.names()),
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
                    f"use one of {fmt_list(allowed)}",
                    "instancetype.notallowed",
                    name,
                )
            )
        elif sku is not None and preset is not None and check_fit and sku.is_cpu:
            out += cpu_rules(ws, preset, sku, ctx)
        elif sku is not None and preset is not None and not nodes and check_fit:
            out += fit_rules(ws, preset, sku, ctx)

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


def node_rules(ws: Workspace, ctx: ValidationContext, only: set[str] | None) -> list[FieldError]:
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
