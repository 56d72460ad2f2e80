"""The settings object: defaults, flags, environment, bounds and --help."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import SettingsError
from reconciler.settings import Settings


def test_defaults_are_valid_and_every_field_is_described() -> None:
    s = Settings()
    assert s.relist_interval_s == 30
    assert s.field_manager == "kaito-reconciler"
    for f in dataclasses.fields(Settings):
        assert f.metadata["spec"].help, f.name


def test_flags_win_over_environment_over_defaults() -> None:
    env = {
        "KAITO_RECONCILER_RELIST_INTERVAL_S": "5",
        "KAITO_RECONCILER_WORKERS": "8",
        "KAITO_RECONCILER_LEADER_ELECT": "false",
    }
    s = Settings.from_sources(["--workers", "2", "--namespace", "team-a"], env)
    assert s.relist_interval_s == 5
    assert s.workers == 2
    assert s.leader_elect is False
    assert s.namespace == "team-a"
    assert Settings.from_sources(["--log-level", "debug"], {}).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["--relist-interval-s", "0.1"],
            "--relist-interval-s / KAITO_RECONCILER_RELIST_INTERVAL_S='0.1': below the minimum 1",
        ),
        (["--workers", "0"], "WORKERS='0': below the minimum 1; use a value from 1 to 64"),
        (["--workers", "x"], "WORKERS='x': not a whole number; use a value from 1 to 64"),
        (["--renew-deadline-s", "20"], "must be less than --lease-duration-s=15"),
        (["--log-level", "LOUD"], "LOG_LEVEL='LOUD': not an allowed value; use DEBUG"),
        (["--field-manager", ""], "FIELD_MANAGER='': empty; name the field manager"),
    ],
)
def test_out_of_bounds_values_name_the_flag_and_the_fix(argv: list[str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(argv, {})
    assert fragment in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_sources([], {"KAITO_RECONCILER_WORKERS": "many"})
    assert "KAITO_RECONCILER_WORKERS='many': not a whole number" in str(info.value)


def test_help_lists_settings_with_bounds() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--relist-interval-s" in out
    assert "[1..3600]" in out
    assert "KAITO_RECONCILER_" in out


def test_bad_flag_exits_2_with_the_message() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "reconciler", "--workers", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert "--workers / KAITO_RECONCILER_WORKERS='0': below the minimum 1" in res.stderr


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "reconciler" / "README.md").read_text()
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        assert f"`{flag}" in readme, flag
        assert f"KAITO_RECONCILER_{f.name.upper()}" in readme, f.name
