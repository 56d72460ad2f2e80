"""Which adapters to serve and at what strength: command-line parsing and discovery.

Pure (no torch): parsing and file-system checks only.

Command line (shared by both runtimes): ``--adapter NAME=STRENGTH`` once per adapter, for example
``--adapter falcon-7b-adapter=0.2``; ``--adapter NAME`` alone means strength 1.0. The adapter's
files are read from ``<adapter root>/NAME/`` (``--adapter-root``, default ``/mnt/adapter``), where
the adapter image's ``/data`` was copied. Only the adapters named on the command line are served;
other directories under the root are ignored (and listed in error messages).

Strengths are decimals; the webhook keeps Workspace strengths in [0, 1], the runtime accepts any
finite float (the arithmetic is the same) and rejects NaN and infinities.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.adapters.errors import (
    AdapterArgumentError,
    AdapterConfigError,
    AdapterNotFoundError,
)

DEFAULT_ADAPTER_ROOT = Path("/mnt/adapter")
"""Where the adapter init containers copy each adapter image's ``/data`` (one folder per name)."""

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
DEFAULT_STRENGTH = 1.0

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter to serve: its name, its directory and its strength (the multiplier of ΔW)."""

    name: str
    path: Path
    strength: float


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe adapter name (a directory name under the root)."""
    if not _NAME.match(name) or ".." in name:
        raise AdapterArgumentError(
            f"adapter name {name!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(starting and ending with a letter or digit, at most 253 characters), "
            "as in the Workspace's adapters[].source.name",
            adapter=name,
        )
    return name


def parse_strength(text: str, *, adapter: str | None = None) -> float:
    """Parse a decimal strength such as ``"0.2"``; NaN and infinities are refused."""
    try:
        value = float(text.strip())
    except ValueError:
        raise AdapterArgumentError(
            f"adapter {adapter!r}: strength {text!r} is not a decimal number; "
            "write it like 0.2 (the Workspace's adapters[].strength)",
            adapter=adapter,
        ) from None
    if not math.isfinite(value):
        raise AdapterArgumentError(
            f"adapter {adapter!r}: strength {text!r} is not finite; use a decimal such as 0.2",
            adapter=adapter,
        )
    return value


def parse_adapter_arg(text: str) -> tuple[str, float]:
    """Parse one ``--adapter`` value: ``NAME=STRENGTH`` or ``NAME`` (strength 1.0)."""
    name, sep, strength = text.partition("=")
    name = name.strip()
    check_name(name)
    if not sep:
        return name, DEFAULT_STRENGTH
    return name, parse_strength(strength, adapter=name)


def parse_adapter_args(values: Iterable[str]) -> dict[str, float]:
    """Parse repeated ``--adapter`` values into ``{name: strength}``, in command-line order."""
    strengths: dict[str, float] = {}
    for text in values:
        name, strength = parse_adapter_arg(text)
        if name in strengths:
            raise AdapterArgumentError(
                f"adapter {name!r} is given twice (--adapter {text!r}); give each adapter once",
                adapter=name,
            )
        strengths[name] = strength
    return strengths


def discover_adapters(root: Path = DEFAULT_ADAPTER_ROOT) -> dict[str, Path]:
    """Every folder directly under ``root`` that holds an ``adapter_config.json``, by name."""
    if not root.is_dir():
        return {}
    return {
        child.name: child
        for child in sorted(root.iterdir())
        if child.is_dir() and (child / CONFIG_FILE).is_file()
    }


def check_adapter_dir(name: str, path: Path) -> None:
    """Raise unless ``path`` holds a PEFT adapter (config and weights) for adapter ``name``."""
    if not path.is_dir():
        root = path.parent
        present = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if root.is_dir()
            else []
        )
        raise AdapterNotFoundError(
            f"adapter {name!r}: no directory {path} (adapters present under {root}: "
            f"{', '.join(present) or 'none'}); the adapter's init container must copy the "
            "adapter image's /data there, and the name must match adapters[].source.name",
            adapter=name,
        )
    if not (path / CONFIG_FILE).is_file():
        nested = sorted(str(p.parent.relative_to(path)) for p in path.glob(f"*/**/{CONFIG_FILE}"))
        hint = (
            f"; found one in {', '.join(nested)}: copy those files to /data directly in the image"
            if nested
            else "; an adapter image must hold a PEFT LoRA adapter "
            "(adapter_config.json and adapter_model.safetensors) in /data"
        )
        files = sorted(p.name for p in path.iterdir())
        raise AdapterConfigError(
            f"adapter {name!r}: {path} has no {CONFIG_FILE} (files: "
            f"{', '.join(files) or 'none'}){hint}",
            adapter=name,
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise AdapterConfigError(
            f"adapter {name!r}: {path} has {CONFIG_FILE} but no weights "
            f"({' or '.join(WEIGHT_FILES)}); save the adapter with PEFT's save_pretrained",
            adapter=name,
        )


def resolve_adapters(
    strengths: Mapping[str, float], root: Path = DEFAULT_ADAPTER_ROOT
) -> list[AdapterSpec]:
    """Turn ``{name: strength}`` into checked ``AdapterSpec``s under ``root``."""
    specs = []
    for name, strength in strengths.items():
        check_name(name)
        path = root / name
        check_adapter_dir(name, path)
        specs.append(AdapterSpec(name=name, path=path, strength=float(strength)))
    return specs


def add_adapter_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--adapter`` (repeatable) and ``--adapter-root`` to a parser or argument group."""
    parser.add_argument(
        "--adapter",
        dest="adapters",
        action="append",
        default=[],
        metavar="NAME[=STRENGTH]",
        help="serve the LoRA adapter in <adapter-root>/NAME at STRENGTH (a decimal, default 1.0; "
        "the Workspace's adapters[].strength); repeat once per adapter",
    )
    parser.add_argument(
        "--adapter-root",
        type=Path,
        default=DEFAULT_ADAPTER_ROOT,
        metavar="DIR",
        help=f"folder holding one sub-folder per adapter (default {DEFAULT_ADAPTER_ROOT})",
    )


def adapters_from_args(values: Sequence[str], root: Path) -> list[AdapterSpec]:
    """Parse ``--adapter`` values and resolve them under ``root`` (the shell's one call)."""
    return resolve_adapters(parse_adapter_args(values), root)
