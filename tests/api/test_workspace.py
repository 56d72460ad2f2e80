from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.errors import StrengthError, WorkspaceParseError
from api.strength import parse_strength, strength_float
from api.workspace import (
    API_VERSION,
    RUNTIME_ANNOTATION,
    ConditionType,
    Runtime,
    Workspace,
)
from tests.api import seed


def test_seed_examples_parse_into_typed_views() -> None:
    ws = Workspace.from_dict(seed.load(seed.FALCON_7B_TRANSFORMERS))
    assert ws.name == "workspace-falcon-7b"
    assert ws.resource.instance_type == "Standard_NC12s_v3"
    assert ws.resource.label_selector is not None
    assert dict(ws.resource.label_selector.match_labels) == {"apps": "falcon-7b"}
    assert ws.preset_name == "falcon-7b"
    assert ws.runtime_annotation == "transformers"
    assert ws.runtime() is Runtime.TRANSFORMERS

    ws3 = Workspace.from_dict(seed.load(seed.FALCON_7B_ADAPTERS))
    assert ws3.inference is not None
    (adapter,) = ws3.inference.adapters
    assert adapter.name == "falcon-7b-adapter"
    assert adapter.source.image == "<YOUR_IMAGE>"
    assert adapter.strength_value() == Decimal("0.2")
    assert ws3.runtime() is Runtime.VLLM  # no annotation: the default


def test_to_dict_round_trips_the_seed_examples() -> None:
    for text in (seed.FALCON_7B, seed.FALCON_7B_TRANSFORMERS, seed.FALCON_7B_ADAPTERS):
        obj = seed.load(text)
        assert Workspace.from_dict(obj).to_dict() == obj


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({"resource": {"count": "2"}}, "resource.count"),
        (
            {"resource": {"labelSelector": {"matchLabels": {"a": 1}}}},
            "resource.labelSelector.matchLabels.a",
        ),
        ({"inference": {"adapters": [{"source": {}}]}}, "inference.adapters[0].source.name"),
        ({"inference": {"adapters": "x"}}, "inference.adapters"),
        ({"inference": {"preset": {"name": 7}}}, "inference.preset.name"),
        ({"status": {"conditions": [{"type": "ResourceReady"}]}}, "status.conditions[0].status"),
        (
            {"metadata": {"annotations": {RUNTIME_ANNOTATION: None}}},
            "metadata.annotations.kaito.sh/runtime",
        ),
    ],
)
def test_from_dict_names_the_path_of_a_bad_value(obj: dict[str, Any], path: str) -> None:
    with pytest.raises(WorkspaceParseError) as info:
        Workspace.from_dict(obj)
    assert info.value.path == path
    assert str(info.value).startswith(path + ": ")


def test_status_conditions() -> None:
    cond = {
        "type": "ResourceReady",
        "status": "True",
        "reason": "NodesReady",
        "message": "1 node ready",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    ws = Workspace.from_dict({"status": {"workerNodes": ["n1"], "conditions": [cond]}})
    got = ws.status.condition(ConditionType.RESOURCE_READY)
    assert got is not None
    assert got.observed_generation == 3
    assert ws.status.condition(ConditionType.INFERENCE_READY) is None
    assert ws.to_dict()["status"] == {"workerNodes": ["n1"], "conditions": [cond]}
    assert ws.to_dict()["apiVersion"] == API_VERSION


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", "0"), ("1", "1"), ("1.0", "1.0"), ("0.2", "0.2"), (".5", "0.5"), ("0.000", "0")],
)
def test_parse_strength_accepts_plain_decimals(text: str, value: str) -> None:
    assert parse_strength(text) == Decimal(value)
    assert strength_float(text) == float(value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1.5", "out of range"),
        ("-0.1", "not a decimal"),
        ("1e-1", "not a decimal"),
        ("NaN", "not a decimal"),
        ("inf", "not a decimal"),
        ("", "not a decimal"),
        (" 0.2", "not a decimal"),
        (0.2, "must be a string"),
    ],
)
def test_parse_strength_refuses_with_the_value_and_the_fix(text: object, words: str) -> None:
    with pytest.raises(StrengthError) as info:
        parse_strength(text)
    assert words in str(info.value)
    assert repr(text) in str(info.value)


_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
_labels = st.dictionaries(_names, _names, max_size=3)
_adapter = st.fixed_dictionaries(
    {
        "source": st.fixed_dictionaries(
            {"name": _names},
            optional={
                "image": _names,
                "imagePullSecrets": st.lists(_names, min_size=1, max_size=2),
            },
        )
    },
    optional={"strength": st.sampled_from(["0", "0.5", "1.0"])},
)
_workspace = st.fixed_dictionaries(
    {
        "apiVersion": st.just(API_VERSION),
        "kind": st.just("Workspace"),
        "resource": st.fixed_dictionaries(
            {
                "labelSelector": st.fixed_dictionaries(
                    {}, optional={"matchLabels": _labels.filter(bool)}
                )
            },
            optional={
                "instanceType": _names,
                "count": st.integers(1, 8),
                "preferredNodes": st.lists(_names, min_size=1, max_size=3),
            },
        ),
        "inference": st.fixed_dictionaries(
            {},
            optional={
                "preset": st.fixed_dictionaries(
                    {"name": _names},
                    optional={
                        "accessMode": st.sampled_from(["public", "private"]),
                        "presetOptions": st.fixed_dictionaries({"image": _names}),
                    },
                ),
                "template": st.just({"spec": {"containers": [{"name": "a", "image": "b"}]}}),
                "adapters": st.lists(_adapter, min_size=1, max_size=3),
            },
        ),
    },
    optional={
        "metadata": st.fixed_dictionaries(
            {"name": _names}, optional={"annotations": _labels.filter(bool)}
        )
    },
)


@settings(max_examples=60, deadline=None)
@given(_workspace)
def test_round_trip_of_generated_workspaces(obj: dict[str, Any]) -> None:
    assert Workspace.from_dict(obj).to_dict() == obj
