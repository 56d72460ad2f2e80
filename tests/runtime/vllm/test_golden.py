"""Golden files: the launch plan of every preset in every scenario.

``python -m tests.support.goldens --update`` rewrites them (the test only compares)."""

from __future__ import annotations

import pytest

from tests.runtime.vllm.scenarios import SCENARIOS, Scenario, golden_path, golden_text
from tests.support.goldens import assert_golden


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_plan_matches_golden(scenario: Scenario) -> None:
    assert_golden(golden_path(scenario), golden_text(scenario))
