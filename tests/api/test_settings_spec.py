"""api.settings_spec: one declaration → flags, variables, checks, help and docs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from api import settings_spec
from api.settings_spec import setting


@dataclass(frozen=True)
class Inner:
    name: str = setting(
        "a", "inner name", flag=False, check=lambda v: None if v.islower() else "not lower"
    )


@dataclass(frozen=True)
class Demo:
    port: int = setting(80, "port", low=1, high=65535)
    ratio: float = setting(0.5, "ratio", low=0.0, high=1.0)
    on: bool = setting(True, "switch")
    no_thing: bool = setting(False, "disable the thing")
    level: str = setting("INFO", "level", choices=("DEBUG", "INFO"))
    path: Path | None = setting(None, "a file")
    tags: tuple[str, ...] = setting((), "tags", repeat=True, max_items=2)
    inner: Inner = setting(default_factory=Inner, help="nested", nested="X_INNER_")


def load(argv: list[str], env: dict[str, str]) -> tuple[dict[str, object], list[str]]:
    p = argparse.ArgumentParser()
    settings_spec.add_arguments(p, Demo, "X_")
    return settings_spec.read(Demo, vars(p.parse_args(argv)), env, "X_")


def test_flags_win_over_the_environment_which_wins_over_defaults() -> None:
    values, problems = load(
        ["--port", "81", "--no-on", "--tags", "a", "--tags", "b"],
        {"X_PORT": "82", "X_RATIO": "0.25", "X_PATH": "/f", "X_NO_THING": "yes"},
    )
    assert problems == []
    assert values == {
        "port": 81,
        "ratio": 0.25,
        "on": False,
        "no_thing": True,
        "path": Path("/f"),
        "tags": ("a", "b"),
    }
    assert Demo(**values).level == "INFO"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "0"], {}, "--port / X_PORT='0': below the minimum 1; use a value from 1 to"),
        ([], {"X_PORT": "x"}, "--port / X_PORT='x': not a whole number; use a value from 1 to"),
        ([], {"X_RATIO": "nan"}, "X_RATIO='nan': not a finite number; use a value from 0 to 1"),
        ([], {"X_ON": "maybe"}, "X_ON='maybe': not a boolean; use true or false"),
        (["--level", "LOUD"], {}, "X_LEVEL='LOUD': not an allowed value; use one of DEBUG, INFO"),
        ([], {"X_TAGS": "a,b,c"}, "X_TAGS='a,b,c': 3 items; at most 2 are allowed"),
    ],
)
def test_one_message_format(argv: list[str], env: dict[str, str], message: str) -> None:
    _, problems = load(argv, env)
    assert len(problems) == 1
    assert message in problems[0]


def test_every_problem_is_reported_at_once() -> None:
    _, problems = load(["--port", "0"], {"X_RATIO": "2"})
    assert len(problems) == 2


def test_checks_of_built_objects_and_nested_settings() -> None:
    assert settings_spec.problems(Demo(port=0), "X_") == [
        "--port / X_PORT=0: below the minimum 1; use a value from 1 to 65535"
    ]
    values, problems = settings_spec.from_env(Inner, {"X_INNER_NAME": "B"}, "X_INNER_")
    assert (values, problems) == ({}, ["X_INNER_NAME='B': not lower; fix or unset it"])


def test_help_and_docs_come_from_the_declaration() -> None:
    p = argparse.ArgumentParser()
    settings_spec.add_arguments(p, Demo, "X_")
    text = " ".join(p.format_help().split())
    assert "--port PORT port [1..65535] (default: 80) [env X_PORT]" in text
    assert "--on, --no-on" in text
    assert "--no-no-thing" not in text
    table = settings_spec.markdown_table(Demo, "X_")
    assert "| `--port` / `X_PORT` | `80` | 1..65535 | port |" in table
    assert "| `X_INNER_NAME` | `a` |  | inner name |" in table
