"""Wire types declared once: Python types with ``Annotated`` constraints -> JSON Schema -> parsing.

A request type is a frozen dataclass, a response type a ``TypedDict``; each field's constraints
(``Field``: description, bounds, lengths) ride on ``Annotated``. From them this module derives

* the JSON Schema (2020-12, the dialect of OpenAPI 3.1) served in ``/openapi.json``;
* a validator that turns the first violation into a ``RequestError`` naming the field path
  (``generate_kwargs.top_p``), the bad value and the allowed range;
* the conversion of a validated JSON object into the dataclass instance.

Nothing here knows about HTTP or torch.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from runtime.server.errors import RequestError

T = TypeVar("T")
REF_PREFIX = "#/components/schemas/"
LIMIT_KEY = "x-server-limit"


@dataclass(frozen=True)
class ExactlyOne:
    """A record-level rule: exactly one of ``fields`` is given and not null. A request type
    declares it as the class attribute ``exactly_one``; the schema says it with ``oneOf`` and
    a violation is refused with ``message`` naming ``field``."""

    fields: tuple[str, ...]
    message: str
    field: str


@dataclass(frozen=True)
class Field:
    """Documentation and bounds of one field (the ``Annotated`` metadata of a wire type)."""

    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    max_properties: int | None = None
    extension: bool = False
    """Not part of the API this type follows (OpenAI's, or KAITO's ``/chat``): our addition."""
    limit: str | None = None
    """A per-server bound: the name of the server setting (``max_n``) whose value replaces
    ``maximum`` in the served document and the request parser (``bind_limits``); ``maximum``
    is then the largest value that setting can take."""

    def constraints(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs = (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("exclusiveMinimum", self.exclusive_minimum),
            ("exclusiveMaximum", self.exclusive_maximum),
            ("minLength", self.min_length),
            ("maxLength", self.max_length),
            ("minItems", self.min_items),
            ("maxItems", self.max_items),
            ("maxProperties", self.max_properties),
        )
        for key, value in pairs:
            if value is not None:
                out[key] = value
        if self.limit is not None:
            out[LIMIT_KEY] = self.limit
        return out


def _is_record(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)


def _split(tp: Any) -> tuple[Any, Field | None]:
    while get_origin(tp) in (typing.NotRequired, typing.Required):
        (tp,) = get_args(tp)
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        field = next((m for m in meta if isinstance(m, Field)), None)
        return base, field
    return tp, None


@functools.cache
def _fields(record: Any) -> tuple[tuple[str, Any, bool], ...]:
    """(name, annotated type, required) of a dataclass or TypedDict, in declaration order.

    Cached: resolving the hints is most of the cost of building a request (measured: 3% of a
    loaded server's samples before)."""
    hints = get_type_hints(record, include_extras=True)
    if dataclasses.is_dataclass(record):
        out = []
        for f in dataclasses.fields(record):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((f.name, hints[f.name], required))
        return tuple(out)
    # Python 3.11 counts a ``NotRequired`` key of a module with postponed annotations as
    # required in ``__required_keys__``; the resolved hint still says NotRequired.
    required_keys = record.__required_keys__
    return tuple(
        (
            name,
            hints[name],
            name in required_keys and get_origin(hints[name]) is not typing.NotRequired,
        )
        for name in hints
    )


def type_schema(tp: Any, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON Schema of a type; records are added to ``defs`` and referenced."""
    base, field = _split(tp)
    schema = _base_schema(base, defs)
    if field is not None:
        schema = {**schema, "description": field.description, **field.constraints()}
        if field.extension:
            schema["x-extension"] = True
    return schema


SCALAR_SCHEMAS: dict[type, dict[str, Any]] = {
    type(None): {"type": "null"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
}


def _base_schema(tp: Any, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    origin = get_origin(tp)
    if tp is Any:
        return {}
    if isinstance(tp, type) and tp in SCALAR_SCHEMAS:
        return dict(SCALAR_SCHEMAS[tp])
    if origin is Literal:
        values = list(get_args(tp))
        return {"enum": values}
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(arg, defs) for arg in get_args(tp)]
        return {"anyOf": options}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": type_schema(item, defs)}
    if origin is dict:
        _, value = get_args(tp)
        return {"type": "object", "additionalProperties": type_schema(value, defs)}
    if origin is Annotated:
        return type_schema(tp, defs)
    if _is_record(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = record_schema(tp, defs)
        return {"$ref": REF_PREFIX + name}
    raise TypeError(f"no JSON Schema for {tp!r}")


def record_schema(record: Any, defs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The object schema of a dataclass or TypedDict (unknown keys are refused)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, tp, is_required in _fields(record):
        prop = type_schema(tp, defs)
        if dataclasses.is_dataclass(record) and not is_required:
            default = _default_of(record, name)
            if default is not dataclasses.MISSING:
                prop = {**prop, "default": default}
        properties[name] = prop
        if is_required:
            required.append(name)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    doc = (record.__doc__ or "").strip()
    if doc:
        schema["description"] = doc.split("\n\n")[0].replace("\n", " ")
    if required:
        schema["required"] = required
    rule = getattr(record, "exactly_one", None)
    if isinstance(rule, ExactlyOne):
        schema["oneOf"] = [
            {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
            for name in rule.fields
        ]
    return schema


def _default_of(record: Any, name: str) -> Any:
    for f in dataclasses.fields(record):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return dataclasses.MISSING
    return dataclasses.MISSING


def components(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Schemas of ``records`` and of every record they reference, by name (sorted)."""
    defs: dict[str, dict[str, Any]] = {}
    for record in records:
        type_schema(record, defs)
    return dict(sorted(defs.items()))


def bind_limits(schema: Any, limits: Mapping[str, int]) -> Any:
    """``schema`` (a JSON Schema, or a tree holding some) with the ``maximum`` of every
    ``x-server-limit`` node set to that setting's value in ``limits``; a copy."""
    if isinstance(schema, list):
        return [bind_limits(item, limits) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bind_limits(value, limits) for key, value in schema.items()}
    name = out.get(LIMIT_KEY)
    if isinstance(name, str):
        if name not in limits:
            raise KeyError(f"no value for the server limit {name!r}")
        out["maximum"] = limits[name]
    return out


class Parser:
    """Validates JSON bodies against a request type and builds the dataclass; ``limits``
    gives the per-server bounds (``Field.limit``) of the server that parses (without it the
    static ``maximum`` applies: for a front that has no such setting)."""

    def __init__(self, record: type[T], limits: Mapping[str, int] | None = None) -> None:
        self.record = record
        defs: dict[str, dict[str, Any]] = {}
        root = type_schema(record, defs)
        schema = {**root, "components": {"schemas": defs}}
        self.schema = schema if limits is None else bind_limits(schema, limits)
        self._validator = Draft202012Validator(self.schema)

    def parse(self, body: Any) -> Any:
        errors = list(self._validator.iter_errors(body))
        rule = getattr(self.record, "exactly_one", None)
        if isinstance(rule, ExactlyOne) and any(
            e.validator == "oneOf" and not e.absolute_path for e in errors
        ):
            others = [e for e in errors if not (e.validator == "oneOf" and not e.absolute_path)]
            if not others:
                given = [
                    f for f in rule.fields if isinstance(body, dict) and body.get(f) is not None
                ]
                # none given: the rule's field; several: the one given too many
                raise RequestError(rule.message, field=given[-1] if len(given) > 1 else rule.field)
        error = best_match(errors)
        if error is not None:
            raise _request_error(error)
        return build(self.record, body)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _request_error(error: ValidationError) -> RequestError:
    field = _path(error.absolute_path) or None
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{field}." if field else ""
        return RequestError(
            f"unknown field{'s' if len(extra) > 1 else ''} "
            + ", ".join(f"'{where}{e}'" for e in extra)
            + f"; allowed fields: {', '.join(allowed)}",
            field=f"{where}{extra[0]}" if extra else field,
        )
    if error.validator == "required":
        present = error.instance if isinstance(error.instance, Mapping) else {}
        missing = [name for name in error.validator_value or [] if name not in present]
        name = f"{field}.{missing[0]}" if field and missing else (missing[0] if missing else field)
        return RequestError("this field is required", field=name)
    message = f"{_show(error.instance)} is not valid: {_explain(error)}"
    description = schema.get("description")
    if description:
        message += f" ({description})"
    return RequestError(message, field=field)


def _explain(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.validator_value
    explanations = {
        "minimum": "must be >= {}",
        "maximum": "must be <= {}",
        "exclusiveMinimum": "must be > {}",
        "exclusiveMaximum": "must be < {}",
        "minLength": "must have at least {} characters",
        "maxLength": "must have at most {} characters",
        "minItems": "must have at least {} items",
        "maxItems": "must have at most {} items",
        "maxProperties": "must have at most {} keys",
    }
    if error.validator in explanations:
        return explanations[str(error.validator)].format(value)
    if error.validator == "enum":
        return "must be one of " + ", ".join(_show(v) for v in value)
    if error.validator == "type":
        return f"must be of type {value}"
    if error.validator == "anyOf":
        kinds = [_kind(s) for s in schema.get("anyOf", [])]
        return "must be " + " or ".join(k for k in kinds if k)
    return str(error.message)


def _kind(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return "an object (" + str(schema["$ref"]).removeprefix(REF_PREFIX) + ")"
    if "enum" in schema:
        return " or ".join(_show(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        return f"an array of {_kind(items) or 'values'}"
    return {
        "null": "null",
        "boolean": "a boolean",
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "object": "an object",
    }.get(str(kind), "")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool | type(None)) else str(value).lower()
    if value is None:
        text = "null"
    return text if len(text) <= 80 else text[:77] + "..."


def build(tp: Any, value: Any) -> Any:
    """Convert validated JSON into ``tp`` (dataclasses built recursively, ints for floats)."""
    base, _ = _split(tp)
    origin = get_origin(base)
    if value is None:
        return None
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        hints = {name: hint for name, hint, _ in _fields(base)}
        return base(**{k: build(hints[k], v) for k, v in value.items()})
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(base):
            if _matches(arg, value):
                return build(arg, value)
        return value
    if origin is list:
        (item,) = get_args(base)
        return [build(item, v) for v in value]
    if base is float:
        return float(value)
    if base is int and isinstance(value, float):
        return int(value)
    return value


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )


SCALAR_MATCHES: dict[type, Callable[[Any], bool]] = {
    type(None): lambda value: value is None,
    bool: lambda value: isinstance(value, bool),
    int: _is_int,
    float: lambda value: not isinstance(value, bool) and isinstance(value, int | float),
    str: lambda value: isinstance(value, str),
}


def _matches(tp: Any, value: Any) -> bool:
    base, _ = _split(tp)
    origin = get_origin(base)
    if isinstance(base, type) and base in SCALAR_MATCHES:
        return SCALAR_MATCHES[base](value)
    if origin is Literal:
        return value in get_args(base)
    if origin is list:
        (item,) = get_args(base)
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    if origin is dict or _is_record(base):
        return isinstance(value, dict)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in get_args(base))
    return True
