"""The reconciler judges Workspaces with the webhook's rules and words (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.config import DEFAULT_CONFIG
from api.defaults import default
from api.presets import load_presets
from api.skus import load_skus
from api.validation import ValidationContext
from reconciler.spec_check import spec_problems
from tests.api import seed
from tests.reconciler import examples
from tests.reconciler.invalid_examples import INVALID
from tests.webhook.support import admission_review
from webhook import decisions
from webhook.review import parse_review


def _webhook_message(obj: dict[str, Any]) -> str:
    req = parse_review(json.dumps(admission_review(default(obj))).encode())
    decision = decisions.validate(req, ValidationContext.default())
    assert not decision.allowed
    return decision.message


def _problems(obj: dict[str, Any]) -> str:
    return spec_problems(obj, config=DEFAULT_CONFIG, presets=load_presets(), skus=load_skus())


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_workspaces_get_the_webhooks_message(case: str) -> None:
    obj, words = INVALID[case]
    message = _problems(obj)
    assert words in message
    assert message == _webhook_message(obj)


@pytest.mark.parametrize(
    "text",
    [examples.SEED_FALCON, examples.SEED_ADAPTERS, examples.MULTI_NODE, examples.TEMPLATE],
)
def test_valid_workspaces_pass(text: str) -> None:
    assert _problems(seed.load(text)) == ""


def test_neither_instance_type_nor_preferred_nodes_gets_the_api_default() -> None:
    # KAITO's API defaults resource.instanceType (Standard_NC12s_v3); the reconciler judges
    # the defaulted Workspace, as admission would have.
    obj = seed.load(examples.SEED_FALCON)
    del obj["resource"]["instanceType"]
    assert _problems(obj) == ""
    assert default(obj, DEFAULT_CONFIG)["resource"]["instanceType"] == "Standard_NC12s_v3"


def test_sizing_problems_are_left_to_the_sizing() -> None:
    too_big = seed.load(examples.SEED_FALCON.replace('falcon-7b"', 'mistral-7b"'))
    assert _problems(too_big) == ""  # reported as NoFit by reconciler.needs


def test_a_deep_object_is_refused_without_recursion() -> None:
    obj = seed.load(examples.TEMPLATE)
    inner: dict[str, Any] = {}
    for _ in range(5000):
        inner = {"a": inner}
    obj["inference"]["template"]["spec"]["x"] = inner
    assert "nested more than 64 levels deep" in _problems(obj)
