"""JSON Patch (RFC 6902) by diff: ``diff(src, dst)`` gives the operations turning src into dst.

Mutations are computed on a copy and sent as the diff, never written by hand. ``apply`` is a
small RFC 6902 interpreter (add, remove, replace) used by tests to check ``apply(a, diff(a, b))
== b``.
"""

from __future__ import annotations

import copy
from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """RFC 6901 pointer token: ``~`` → ``~0``, ``/`` → ``~1`` (``kaito.sh/runtime``)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``1``, ``1.0`` and ``True`` are different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def diff(src: Any, dst: Any, path: str = "") -> list[Op]:
    """Operations turning ``src`` into ``dst`` (empty when they are the same JSON)."""
    if same(src, dst):
        return []
    if isinstance(src, dict) and isinstance(dst, dict):
        ops: list[Op] = []
        for key in src:
            if key not in dst:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in dst.items():
            child = f"{path}/{escape(key)}"
            if key not in src:
                ops.append({"op": "add", "path": child, "value": copy.deepcopy(value)})
            else:
                ops.extend(diff(src[key], value, child))
        return ops
    if isinstance(src, list) and isinstance(dst, list):
        ops = []
        common = min(len(src), len(dst))
        for i in range(common):
            ops.extend(diff(src[i], dst[i], f"{path}/{i}"))
        for i in range(len(src) - 1, common - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})
        for i in range(common, len(dst)):
            ops.append({"op": "add", "path": f"{path}/{i}", "value": copy.deepcopy(dst[i])})
        return ops
    return [{"op": "replace", "path": path, "value": copy.deepcopy(dst)}]


class PatchError(ValueError):
    """A patch does not apply to the document."""


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} must start with '/'")
    tokens = [unescape(t) for t in path[1:].split("/")]
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, dict):
            node = node[token]
        else:
            raise PatchError(f"path {path!r} goes through a scalar")
    return node, tokens[-1]


def _apply_in_list(parent: list[Any], key: str, op: Op) -> None:
    kind, path = op["op"], op["path"]
    index = len(parent) if key == "-" else int(key)
    if kind == "add":
        if not 0 <= index <= len(parent):
            raise PatchError(f"index {index} out of range at {path}")
        parent.insert(index, copy.deepcopy(op["value"]))
    elif kind == "remove":
        del parent[index]
    elif kind == "replace":
        parent[index] = copy.deepcopy(op["value"])
    else:
        raise PatchError(f"unsupported op {kind!r}")


def _apply_in_dict(parent: dict[str, Any], key: str, op: Op) -> None:
    kind, path = op["op"], op["path"]
    if kind == "add":
        parent[key] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[key]
    elif kind == "replace":
        if key not in parent:
            raise PatchError(f"replace of a missing member at {path}")
        parent[key] = copy.deepcopy(op["value"])
    else:
        raise PatchError(f"unsupported op {kind!r}")


def apply(doc: Any, ops: list[Op]) -> Any:
    """Apply add/remove/replace operations to a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        if path == "":
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError("cannot remove the whole document")
        try:
            parent, key = _parent(doc, path)
            if isinstance(parent, list):
                _apply_in_list(parent, key, op)
            elif isinstance(parent, dict):
                _apply_in_dict(parent, key, op)
            else:
                raise PatchError(f"path {path!r} has a scalar parent")
        except (KeyError, IndexError, ValueError) as exc:
            if isinstance(exc, PatchError):
                raise
            raise PatchError(f"{kind} {path}: {exc!r}") from exc
    return doc
