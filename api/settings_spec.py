"""Settings declared once: each process's settings are a frozen dataclass whose fields come from
:func:`setting` (default, help, bounds, choices). From that one declaration this module derives
the command-line flags (``--field-name``), the environment variables (``PREFIX_FIELD_NAME``), the
``--help`` text, the checks, and the README tables (:func:`markdown_table`).

Every bad value is reported in one format, naming the setting by flag and variable, the value, and
the fix::

    --port / KAITO_WEBHOOK_PORT='70000': above the maximum 65535; use a value from 1 to 65535

Flags win over the environment, which wins over the defaults. This module is pure (no I/O, nothing
read at import time): callers pass ``argv`` and ``env``, and the exception class of their package.
It lives in ``api`` because every package may import ``api`` (see the import contracts).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Spec:
    """What one setting is, besides its name, type and default."""

    help: str
    low: Any = None
    high: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    """Text → value for types this module does not know; raises ``ValueError`` saying why."""
    show: Callable[[Any], str] | None = None
    """Value → text for help and docs (default: ``str``)."""
    repeat: bool = False
    """A tuple setting given by repeating its flag (its variable, if any, is comma-separated)."""
    positional: bool = False
    flag: bool = True
    env: bool = True
    nested: str | None = None
    """A nested settings dataclass read from the environment with this prefix (no flags)."""
    max_items: int | None = None
    fix: str | None = None
    """The fix named when a value is refused (default: derived from the bounds or choices)."""
    check: Callable[[Any], str | None] | None = None
    """A typed value → what is wrong with it (e.g. "not a DNS-1123 label"), or ``None``."""
    group: str | None = None
    """The ``--help`` section the flag is listed in."""


def setting(default: Any = dataclasses.MISSING, help: str = "", **spec: Any) -> Any:
    """A dataclass field with its :class:`Spec` (pass ``default_factory=`` for mutable ones)."""
    factory = spec.pop("default_factory", dataclasses.MISSING)
    meta = {"spec": Spec(help=help, **spec)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Names:
    """How one setting is named on the command line and in the environment."""

    field: str
    flag: str | None
    env: str | None

    @property
    def label(self) -> str:
        return " / ".join(n for n in (self.flag, self.env) if n) or self.field


class Problem(ValueError):
    """One refused value (internal: callers raise their package's error with the message)."""


def spec_of(f: dataclasses.Field[Any]) -> Spec:
    spec = f.metadata.get("spec")
    if not isinstance(spec, Spec):
        raise TypeError(f"{f.name} is not declared with api.settings_spec.setting()")
    return spec


def names(f: dataclasses.Field[Any], env_prefix: str | None) -> Names:
    spec = spec_of(f)
    flag = None
    if spec.flag and spec.nested is None:
        flag = f.name if spec.positional else "--" + f.name.replace("_", "-")
    env = env_prefix + f.name.upper() if env_prefix and spec.env and spec.nested is None else None
    return Names(f.name, flag, env)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base(hint: Any) -> tuple[Any, bool]:
    """The type without ``| None``, and whether ``None`` is allowed."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def show(spec: Spec, value: Any) -> str:
    """A value as help and docs write it."""
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if spec.show is not None:
        return spec.show(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, float | int):
        return _number(value)
    return str(value)


def bounds_text(spec: Spec) -> str:
    """``1..65535``, ``>= 0``, ``<= 30``, ``one of a, b`` or ``""``."""
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    low = None if spec.low is None else show(spec, spec.low)
    high = None if spec.high is None else show(spec, spec.high)
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    if spec.max_items is not None:
        return f"at most {spec.max_items} items"
    return ""


def _fix(spec: Spec, hint: Any) -> str:
    return spec.fix or _bounds_fix(spec) or _type_fix(hint)


def _bounds_fix(spec: Spec) -> str:
    if spec.choices:
        return "use one of " + ", ".join(spec.choices)
    if spec.low is not None and spec.high is not None:
        return f"use a value from {show(spec, spec.low)} to {show(spec, spec.high)}"
    if spec.low is not None:
        return f"use a value of at least {show(spec, spec.low)}"
    if spec.high is not None:
        return f"use a value of at most {show(spec, spec.high)}"
    return ""


def _type_fix(hint: Any) -> str:
    base, _ = _base(hint)
    if base is bool:
        return "use true or false (1/0, yes/no, on/off)"
    if base is int:
        return "use a whole number"
    if base is float:
        return "use a number"
    return "fix or unset it"


def message(names_: Names, raw: object, problem: str, fix: str) -> str:
    """The one message format of a refused setting."""
    return f"{names_.label}={raw!r}: {problem}; {fix}"


def convert(spec: Spec, hint: Any, text: str) -> Any:
    """Text (a flag's or a variable's) → a value of the field's type; raises :class:`Problem`."""
    base, optional = _base(hint)
    stripped = text.strip()
    if optional and stripped == "" and base is not bool:
        return None
    try:
        if spec.parse is not None:
            return spec.parse(stripped)
        return _typed(base, text)
    except Problem:
        raise
    except ValueError as exc:
        raise Problem(str(exc)) from None


def _typed(base: Any, text: str) -> Any:
    """``text`` as a ``base`` (bool, int, float, Path, a tuple of strings; else the text)."""
    stripped = text.strip()
    if base is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE or stripped == "":
            return False
        raise Problem("not a boolean")
    if base is int:
        try:
            return int(stripped)
        except ValueError:
            raise Problem("not a whole number") from None
    if base is float:
        return _finite(stripped)
    if base is Path:
        return Path(stripped)
    if typing.get_origin(base) is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Problem("not a number") from None
    if not math.isfinite(value):
        raise Problem("not a finite number")
    return value


def check_value(spec: Spec, value: Any) -> str | None:
    """What is wrong with an already typed value (bounds, choices, items), or ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if spec.choices is not None and value not in spec.choices:
        return "not an allowed value"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if spec.low is not None and value < spec.low:
        return f"below the minimum {show(spec, spec.low)}"
    if spec.high is not None and value > spec.high:
        return f"above the maximum {show(spec, spec.high)}"
    if spec.max_items is not None and len(value) > spec.max_items:
        return f"{len(value)} items; at most {spec.max_items} are allowed"
    if spec.check is not None:
        return spec.check(value)
    return None


def problems(obj: Any, env_prefix: str | None = None) -> list[str]:
    """One message per field of a settings object whose value is out of its bounds or choices."""
    hints = _hints(type(obj))
    out = []
    for f in dataclasses.fields(obj):
        spec = spec_of(f)
        value = getattr(obj, f.name)
        problem = check_value(spec, value)
        if problem is not None:
            shown = show(spec, value) if spec.show else value
            out.append(message(names(f, env_prefix), shown, problem, _fix(spec, hints[f.name])))
    return out


# -- the command line ------------------------------------------------------------------------------


def help_text(f: dataclasses.Field[Any], env_prefix: str | None) -> str:
    spec = spec_of(f)
    parts = [spec.help.rstrip()]
    bounds = bounds_text(spec)
    if bounds and not spec.choices:
        parts.append(f"[{bounds}]")
    if not spec.positional:
        default = _default(f)
        parts.append(f"(default: {show(spec, default)})")
    env = names(f, env_prefix).env
    if env:
        parts.append(f"[env {env}]")
    return " ".join(parts).replace("%", "%%")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    env_prefix: str | None = None,
) -> None:
    """One argument per flagged field of ``cls``; every value arrives as text (or ``None``)."""
    hints = _hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    top = parser
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        flag = names(f, env_prefix).flag
        if flag is None:
            continue
        parser = top
        if spec.group is not None and isinstance(top, argparse.ArgumentParser):
            if spec.group not in groups:
                groups[spec.group] = top.add_argument_group(spec.group)
            parser = groups[spec.group]
        text = help_text(f, env_prefix)
        base, _ = _base(hints[f.name])
        if spec.positional:
            parser.add_argument(f.name, metavar=spec.metavar, help=text)
        elif base is bool:
            # --no-kube stays one flag; other booleans get --name and --no-name.
            action: Any = argparse.BooleanOptionalAction
            if f.name.startswith("no_"):
                action = "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=None, help=text)
        elif spec.repeat:
            parser.add_argument(
                flag, dest=f.name, action="append", default=None, metavar=spec.metavar, help=text
            )
        else:
            metavar = spec.metavar or ("{" + ",".join(spec.choices) + "}" if spec.choices else None)
            parser.add_argument(
                flag, dest=f.name, default=None, metavar=metavar or f.name.upper(), help=text
            )


def read(
    cls: type,
    args: Mapping[str, Any],
    env: Mapping[str, str],
    env_prefix: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Each field's value from the parsed flags, else the environment (defaults left out), and
    the problems of the values that could not be converted or are out of bounds."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    found: list[str] = []
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        n = names(f, env_prefix)
        hint = hints[f.name]
        if spec.nested is not None:
            continue
        given = args.get(f.name)
        if isinstance(given, bool) or (isinstance(given, list) and spec.repeat):
            value: Any = tuple(given) if isinstance(given, list) else given
            raw: object = given
        elif given is not None:
            raw = given
        elif n.env is not None and n.env in env:
            raw = env[n.env]
        else:
            continue
        if not isinstance(raw, bool | list):
            try:
                value = convert(spec, hint, str(raw))
            except Problem as exc:
                said, _, fix = str(exc).partition("; ")
                found.append(message(n, raw, said, fix or _fix(spec, hint)))
                continue
        wrong = check_value(spec, value)
        if wrong is not None:
            found.append(message(n, raw, wrong, _fix(spec, hint)))
            continue
        values[f.name] = value
    return values, found


def from_env(
    cls: type, env: Mapping[str, str], env_prefix: str
) -> tuple[dict[str, Any], list[str]]:
    """:func:`read` with no flags (a settings object set by its environment only)."""
    return read(cls, {}, env, env_prefix)


# -- documentation ---------------------------------------------------------------------------------


def rows(cls: type, env_prefix: str | None = None) -> Iterator[tuple[str, str, str, str, str]]:
    """(flag or variable, default, bounds, meaning, field) of every setting, nested ones after."""
    nested = []
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if spec.nested is not None:
            nested.append((f, spec.nested))
            continue
        n = names(f, env_prefix)
        where = " / ".join(f"`{x}`" for x in (n.flag, n.env) if x)
        yield where, show(spec, _default(f)), bounds_text(spec), " ".join(spec.help.split()), f.name
    for f, prefix in nested:
        yield from rows(typing.cast(type, _hints(cls)[f.name]), prefix)


def markdown_table(cls: type, env_prefix: str | None = None) -> str:
    """The README table of a settings class (one row per setting)."""
    lines = ["| setting | default | bounds | meaning |", "|---|---|---|---|"]
    for where, default, bounds, help_, _ in rows(cls, env_prefix):
        meaning = help_.replace("|", "\\|").replace("<", "\\<")
        cells = [where, f"`{default}`", bounds.replace("|", "\\|"), meaning]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "Names",
    "Problem",
    "Spec",
    "add_arguments",
    "bounds_text",
    "check_value",
    "convert",
    "from_env",
    "markdown_table",
    "message",
    "names",
    "problems",
    "read",
    "rows",
    "setting",
    "show",
    "spec_of",
]
