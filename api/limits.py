"""Bounds on the shape of an object before anything recursive looks at it (pure).

Validation, defaulting and rendering walk a Workspace recursively (``copy.deepcopy``,
``jsonschema``, JSON Patch diffs). A Workspace's ``inference.template`` is free-form, so a
user can nest it hundreds of levels deep; these checks run first, without recursion, so that
such an object gets a clear refusal naming the limit instead of a ``RecursionError``.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of dicts and lists judged; real Kubernetes objects stay under 20."""

MAX_NODES = 200_000
"""Most dicts, lists and values in one object."""


def shape(
    obj: Any, *, stop_at_depth: int = MAX_DEPTH, stop_at_nodes: int = MAX_NODES
) -> tuple[int, int]:
    """``(depth, nodes)`` of a JSON-like value, without recursion. Stops counting once either
    exceeds its bound (the result is then just over the bound)."""
    depth = nodes = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, level = stack.pop()
        nodes += 1
        depth = max(depth, level)
        if depth > stop_at_depth or nodes > stop_at_nodes:
            break
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return depth, nodes


def too_complex(obj: Any, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> str:
    """Why ``obj`` is too deep or too large to judge, naming the limit; ``""`` when it is not."""
    depth, nodes = shape(obj, stop_at_depth=max_depth, stop_at_nodes=max_nodes)
    if depth > max_depth:
        return (
            f"the object is nested more than {max_depth} levels deep, the limit for a "
            "Workspace; flatten inference.template (real Pod templates need under 20 levels)"
        )
    if nodes > max_nodes:
        return (
            f"the object has more than {max_nodes} fields and values, the limit for a "
            "Workspace; shrink inference.template"
        )
    return ""
