from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api.config import AdminConfig
from api.defaults import default
from api.workspace import RUNTIME_ANNOTATION, Runtime
from tests.api import seed


def test_runtime_annotation_defaults_to_vllm_and_is_kept_when_set() -> None:
    out = default(seed.load(seed.FALCON_7B))
    assert out["metadata"]["annotations"] == {RUNTIME_ANNOTATION: "vllm"}
    kept = default(seed.load(seed.FALCON_7B_TRANSFORMERS))
    assert kept["metadata"]["annotations"][RUNTIME_ANNOTATION] == "transformers"
    admin = default(seed.load(seed.FALCON_7B), AdminConfig(default_runtime=Runtime.TRANSFORMERS))
    assert admin["metadata"]["annotations"][RUNTIME_ANNOTATION] == "transformers"


def test_adapter_strength() -> None:
    obj = seed.load(seed.FALCON_7B_ADAPTERS)
    obj["inference"]["adapters"] += [
        {"source": {"name": "b", "image": "x"}},
        {"source": {"name": "c", "image": "x"}, "strength": 0.25},
        {"source": {"name": "d", "image": "x"}, "strength": 1},
    ]
    out = default(obj)
    assert [a["strength"] for a in out["inference"]["adapters"]] == ["0.2", "1.0", "0.25", "1"]
    out = default(obj, AdminConfig(default_adapter_strength="0.5"))
    assert out["inference"]["adapters"][1]["strength"] == "0.5"


def test_default_instance_type_only_without_type_or_nodes() -> None:
    cfg = AdminConfig(default_instance_type="Standard_NC12s_v3")
    obj = seed.load(seed.FALCON_7B)
    del obj["resource"]["instanceType"]
    assert default(obj, cfg)["resource"]["instanceType"] == "Standard_NC12s_v3"
    assert default(seed.load(seed.FALCON_7B), cfg)["resource"]["instanceType"] == "Standard_NC6s_v3"
    obj["resource"]["preferredNodes"] = ["gpu-1"]
    assert "instanceType" not in default(obj, cfg)["resource"]
    assert "instanceType" not in default(obj)["resource"]


def test_default_is_pure() -> None:
    obj = seed.load(seed.FALCON_7B_ADAPTERS)
    before = copy.deepcopy(obj)
    out = default(obj)
    assert obj == before
    assert out is not obj
    assert default(out) == out  # idempotent


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["metadata", "resource", "inference", "adapters", "annotations", "strength", "x"]
)
_shaped = st.recursive(
    _json,
    lambda children: st.dictionaries(_keys, children, max_size=4) | st.lists(children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _shaped, max_size=4))
def test_default_never_raises_on_any_shape(obj: dict[str, Any]) -> None:
    before = json.dumps(obj, sort_keys=True, default=str)
    out = default(obj)
    assert json.dumps(obj, sort_keys=True, default=str) == before
    assert isinstance(out, dict)
