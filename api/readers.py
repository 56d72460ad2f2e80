"""Typed readers of plain dicts (as the Kubernetes API or ``yaml.safe_load`` return them): each
returns the value or raises ``WorkspaceParseError`` naming the path of a value of the wrong type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.errors import WorkspaceParseError


def read_obj(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any] | None:
    if value is None:
        if required:
            raise WorkspaceParseError(path, "required object is missing")
        return None
    if not isinstance(value, Mapping):
        raise WorkspaceParseError(path, f"must be an object, not {type(value).__name__}")
    return value


def read_str(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise WorkspaceParseError(path, "required string is missing")
        return None
    if not isinstance(value, str):
        raise WorkspaceParseError(path, f"must be a string, not {type(value).__name__}")
    return value


def required_str(value: Any, path: str) -> str:
    s = read_str(value, path, required=True)
    if s is None:  # pragma: no cover - read_str raised already
        raise WorkspaceParseError(path, "required string is missing")
    return s


def required_obj(value: Any, path: str) -> Mapping[str, Any]:
    o = read_obj(value, path, required=True)
    if o is None:  # pragma: no cover - read_obj raised already
        raise WorkspaceParseError(path, "required object is missing")
    return o


def read_int(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkspaceParseError(path, f"must be an integer, not {type(value).__name__}")
    return value


def read_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkspaceParseError(path, f"must be a list, not {type(value).__name__}")
    return value


def read_strs(value: Any, path: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(read_list(value, path)):
        s = required_str(item, f"{path}[{i}]")
        out.append(s)
    return tuple(out)


def read_str_map(value: Any, path: str) -> dict[str, str]:
    obj = read_obj(value, path) or {}
    out: dict[str, str] = {}
    for k, v in obj.items():
        s = required_str(v, f"{path}.{k}")
        out[str(k)] = s
    return out


def put_present(out: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is absent (None or an empty list/tuple/dict)."""
    if value is None or (isinstance(value, list | tuple | dict) and not value):
        return
    out[key] = value
