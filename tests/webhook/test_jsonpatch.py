from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.jsonpatch import PatchError, apply, diff, escape, same, unescape


def test_annotation_keys_are_escaped() -> None:
    src: dict[str, Any] = {"metadata": {"annotations": {}}}
    dst = {"metadata": {"annotations": {"kaito.sh/runtime": "vllm"}}}
    assert diff(src, dst) == [
        {"op": "add", "path": "/metadata/annotations/kaito.sh~1runtime", "value": "vllm"}
    ]
    assert escape("a~b/c") == "a~0b~1c"
    assert unescape(escape("a~b/c~1")) == "a~b/c~1"


def test_lists_and_scalars() -> None:
    assert diff([1, 2, 3], [1, 5]) == [
        {"op": "replace", "path": "/1", "value": 5},
        {"op": "remove", "path": "/2"},
    ]
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert diff({"a": 1}, {"a": 1.0}) == [{"op": "replace", "path": "/a", "value": 1.0}]
    assert diff({"a": [1]}, {"a": [1]}) == []
    assert diff(1, 2) == [{"op": "replace", "path": "", "value": 2}]


def test_same_is_json_equality() -> None:
    assert not same(1, True)
    assert not same(1, 1.0)
    assert same({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})


def test_apply_refuses_bad_patches() -> None:
    with pytest.raises(PatchError):
        apply({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}])
    with pytest.raises(PatchError):
        apply({"a": 1}, [{"op": "remove", "path": "/b"}])
    with pytest.raises(PatchError):
        apply({"a": 1}, [{"op": "move", "path": "/a"}])


_keys = st.sampled_from(["a", "b", "c/d", "e~f", "kaito.sh/runtime", ""])
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json, _json)
def test_applying_the_diff_gives_the_target(a: Any, b: Any) -> None:
    patch = diff(a, b)
    assert same(apply(a, patch), b)
    assert (patch == []) == same(a, b)
