"""The schema rules: every way an object breaks the Workspace schema (``jsonschema`` on the
CRD's openAPIV3Schema, closed: unknown fields are errors)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jsonschema

from api.schema import closed_schema
from api.validation.base import MISSING, FieldError


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
                    err.instance if kind not in ("maxItems", "maxLength") else MISSING,
                )
            )
    return out
