"""Command-line strengths and discovery under the adapter root."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.adapters import (
    AdapterArgumentError,
    AdapterConfigError,
    AdapterNotFoundError,
    AdapterSpec,
    adapters_from_args,
    add_adapter_arguments,
    discover_adapters,
    parse_adapter_arg,
    parse_adapter_args,
    resolve_adapters,
)

NAMES = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda n: ".." not in n
)


@given(name=NAMES, strength=st.floats(allow_nan=False, allow_infinity=False))
def test_name_and_strength_round_trip(name: str, strength: float) -> None:
    assert parse_adapter_arg(f"{name}={strength!r}") == (name, strength)


def test_strength_is_optional_and_decimal() -> None:
    assert parse_adapter_arg("falcon-7b-adapter") == ("falcon-7b-adapter", 1.0)
    assert parse_adapter_arg("falcon-7b-adapter=0.2") == ("falcon-7b-adapter", 0.2)
    assert parse_adapter_arg("a= 1 ") == ("a", 1.0)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a=abc", "strength 'abc' is not a decimal"),
        ("a=", "strength '' is not a decimal"),
        ("a=nan", "not finite"),
        ("a=inf", "not finite"),
        ("../etc=0.1", "adapter name '../etc' is not valid"),
        ("a/b=0.1", "adapter name 'a/b' is not valid"),
        ("=0.1", "adapter name '' is not valid"),
        ("-a=0.1", "adapter name '-a' is not valid"),
    ],
)
def test_bad_values_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(AdapterArgumentError, match=needle):
        parse_adapter_arg(text)


def test_duplicates_are_refused_and_order_kept() -> None:
    assert list(parse_adapter_args(["b=0.1", "a=0.5"]).items()) == [("b", 0.1), ("a", 0.5)]
    with pytest.raises(AdapterArgumentError, match="'a' is given twice"):
        parse_adapter_args(["a=0.1", "a=0.2"])


def _fake_adapter(root: Path, name: str, weights: bool = True) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def test_discovery_and_resolution(tmp_path: Path) -> None:
    a = _fake_adapter(tmp_path, "a")
    b = _fake_adapter(tmp_path, "b")
    (tmp_path / "not-an-adapter").mkdir()
    assert discover_adapters(tmp_path) == {"a": a, "b": b}
    assert discover_adapters(tmp_path / "absent") == {}
    assert resolve_adapters({"b": 0.25}, tmp_path) == [AdapterSpec("b", b, 0.25)]


def test_missing_directory_lists_what_is_there(tmp_path: Path) -> None:
    _fake_adapter(tmp_path, "present")
    with pytest.raises(AdapterNotFoundError, match=r"'ghost': no directory .*present") as err:
        resolve_adapters({"ghost": 0.5}, tmp_path)
    assert err.value.adapter == "ghost"


def test_directory_without_config_points_at_nested_one(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "checkpoint-100"
    nested.mkdir(parents=True)
    (nested / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterConfigError, match=r"no adapter_config.json .*checkpoint-100"):
        resolve_adapters({"a": 0.5}, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterConfigError, match=r"'empty'.*files: none.*in /data"):
        resolve_adapters({"empty": 0.5}, tmp_path)


def test_directory_without_weights(tmp_path: Path) -> None:
    _fake_adapter(tmp_path, "a", weights=False)
    with pytest.raises(AdapterConfigError, match="no weights"):
        resolve_adapters({"a": 0.5}, tmp_path)


def test_argparse_helpers(tmp_path: Path) -> None:
    a = _fake_adapter(tmp_path, "a")
    parser = argparse.ArgumentParser()
    add_adapter_arguments(parser)
    args = parser.parse_args(["--adapter", "a=0.2", "--adapter-root", str(tmp_path)])
    assert adapters_from_args(args.adapters, args.adapter_root) == [AdapterSpec("a", a, 0.2)]
    defaults = parser.parse_args([])
    assert defaults.adapters == []
    assert defaults.adapter_root == Path("/mnt/adapter")
    assert adapters_from_args(defaults.adapters, defaults.adapter_root) == []


def test_any_finite_float_is_accepted() -> None:
    # The webhook keeps Workspace strengths in [0, 1]; the runtime's arithmetic does not care.
    assert parse_adapter_arg("a=-0.5") == ("a", -0.5)
    assert math.isclose(parse_adapter_arg("a=1.5e0")[1], 1.5)
