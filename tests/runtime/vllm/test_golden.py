"""Golden files: the launch plan of every preset in every scenario.

``UPDATE_GOLDEN=1 pytest tests/runtime/vllm/test_golden.py`` rewrites them."""

from __future__ import annotations

import json
import os

import pytest

from tests.runtime.vllm.scenarios import GOLDEN_DIR, SCENARIOS, Scenario, render


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_plan_matches_golden(scenario: Scenario) -> None:
    path = GOLDEN_DIR / f"{scenario.name}.json"
    text = json.dumps(render(scenario), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; if the change is intended, rerun with UPDATE_GOLDEN=1 and review "
        "the diff"
    )
