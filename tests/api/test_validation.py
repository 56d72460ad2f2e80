from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.config import AdminConfig
from api.defaults import default
from api.presets import load_presets
from api.skus import load_skus
from api.validation import (
    NodeFacts,
    ValidationContext,
    preferred_node_names,
    schema_errors,
    validate_create,
    validate_update,
)
from api.workspace import RUNTIME_ANNOTATION
from tests.api import seed
from tests.api.cases import CASES, Case

CTX = ValidationContext.default()


def _messages(errors: list[Any]) -> str:
    return "\n".join(map(str, errors))


@pytest.mark.parametrize("name", sorted(seed.EXAMPLES))
def test_seed_examples_are_valid_as_written_and_defaulted(name: str) -> None:
    obj = seed.load(seed.EXAMPLES[name])
    assert validate_create(obj, CTX) == []
    assert validate_create(default(obj), CTX) == []


def test_the_third_example_verbatim_asks_to_replace_the_placeholder() -> None:
    errors = validate_create(default(seed.load(seed.FALCON_7B_ADAPTERS)), CTX)
    assert len(errors) == 1
    (err,) = errors
    assert err.field == "inference.adapters[0].source.image"
    assert err.reason == "adapters.image"
    assert "replace <YOUR_IMAGE> with your adapter image" in str(err)


def test_at_least_thirty_distinct_bad_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_workspaces_are_refused_with_the_expected_message(case: Case) -> None:
    errors = validate_create(default(case.build()), CTX)
    text = _messages(errors)
    assert case.expect in text, text
    for err in errors:
        assert "fix: " in str(err)
        assert err.field


def test_all_errors_are_reported_at_once() -> None:
    obj = seed.load(seed.FALCON_7B_ADAPTERS)
    obj["metadata"]["annotations"] = {RUNTIME_ANNOTATION: "tgi"}
    obj["resource"]["instanceType"] = "Standard_NC6s_v9"
    obj["inference"]["adapters"][0]["strength"] = "7"
    obj["resource"]["labelSelector"]["matchLabels"] = {}
    errors = validate_create(obj, CTX)
    fields = {e.field for e in errors}
    assert {
        "metadata.annotations[kaito.sh/runtime]",
        "resource.instanceType",
        "inference.adapters[0].strength",
        "inference.adapters[0].source.image",
        "resource.labelSelector.matchLabels",
    } <= fields


def test_schema_errors_are_all_listed() -> None:
    obj = seed.load(seed.FALCON_7B)
    obj["spec"] = {}
    obj["resource"]["count"] = "x"
    obj["inference"]["preset"]["mode"] = 1
    fields = {e.field for e in schema_errors(obj)}
    assert fields == {"spec", "resource.count", "inference.preset.mode"}
    assert [str(e) for e in schema_errors([])] == [
        "(object): must be of type object (got []); fix: send a Workspace object"
    ]


def test_admin_limits() -> None:
    cfg = AdminConfig(
        allowed_instance_types=frozenset({"standard_nc12s_v3"}),
        allowed_presets=frozenset({"phi-2"}),
        max_adapters=0,
    )
    ctx = ValidationContext.default(cfg)
    text = _messages(validate_create(seed.load(seed.FALCON_7B_ADAPTERS_FILLED), ctx))
    assert "inference.preset.name: is not allowed in this cluster" in text
    assert "more than the 0 allowed" in text
    text = _messages(validate_create(seed.load(seed.FALCON_7B), ctx))
    assert (
        'resource.instanceType: is not allowed in this cluster (got "Standard_NC6s_v3"); '
        "fix: use one of standard_nc12s_v3" in text
    )


def test_extra_skus_from_the_admin_are_known_and_sized() -> None:
    from api.skus import GpuSku

    big = GpuSku(name="onprem-l40s", gpu_count=1, gpu_memory_mib=48 * 1024, gpu_model="L40S")
    tiny = GpuSku(name="onprem-tiny", gpu_count=1, gpu_memory_mib=8 * 1024)
    ctx = ValidationContext.default(AdminConfig(extra_skus=(big, tiny)))
    obj = seed.load(seed.FALCON_7B)
    obj["resource"]["instanceType"] = "onprem-l40s"
    assert validate_create(obj, ctx) == []
    obj["resource"]["instanceType"] = "onprem-tiny"
    text = _messages(validate_create(obj, ctx))
    assert "is too small for falcon-7b" in text
    assert "onprem-l40s" in text  # suggested


def test_too_small_suggests_the_same_cloud() -> None:
    obj = seed.load(seed.FALCON_7B)
    obj["inference"]["preset"]["name"] = "falcon-40b"
    obj["resource"]["instanceType"] = "g5.xlarge"
    (err,) = validate_create(obj, CTX)
    assert err.fix.startswith("use an instance type that holds it, e.g. g5.12xlarge")


# ----------------------------------------------------------------------------- nodes


def _prepared(nodes: list[str]) -> dict[str, Any]:
    obj = seed.load(seed.FALCON_7B)
    del obj["resource"]["instanceType"]
    obj["resource"]["preferredNodes"] = nodes
    return obj


def _node(name: str, labels: dict[str, str], gpus: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": gpus}},
    }


def test_preferred_nodes_must_exist_match_the_labels_and_have_gpus() -> None:
    good = NodeFacts.from_node(_node("gpu-1", {"apps": "falcon-7b"}))
    assert good.gpu_allocatable == 1
    facts = {
        "gpu-1": good,
        "gpu-2": NodeFacts.from_node(_node("gpu-2", {"apps": "other"})),
        "gpu-3": NodeFacts.from_node(_node("gpu-3", {"apps": "falcon-7b"}, gpus="0")),
        "gpu-4": None,
    }
    ctx = ValidationContext.default(nodes=facts)
    assert validate_create(_prepared(["gpu-1"]), ctx) == []
    errors = validate_create(_prepared(["gpu-1", "gpu-2", "gpu-3", "gpu-4"]), ctx)
    text = _messages(errors)
    assert (
        "resource.preferredNodes[1]: node gpu-2 does not match resource.labelSelector "
        "(apps=falcon-7b)" in text
    )
    assert "fix: kubectl label node gpu-2 apps=falcon-7b" in text
    assert (
        "resource.preferredNodes[2]: node gpu-3 reports no nvidia.com/gpu in status.allocatable"
        in text
    )
    assert "resource.preferredNodes[3]: names a node that does not exist" in text
    assert len(errors) == 3


def test_match_expressions_apply_to_preferred_nodes() -> None:
    obj = _prepared(["gpu-1"])
    obj["resource"]["labelSelector"]["matchExpressions"] = [
        {"key": "zone", "operator": "In", "values": ["a", "b"]}
    ]
    node = NodeFacts.from_node(_node("gpu-1", {"apps": "falcon-7b", "zone": "c"}))
    errors = validate_create(obj, ValidationContext.default(nodes={"gpu-1": node}))
    assert "zone In ['a', 'b']" in _messages(errors)


def test_node_facts_tolerate_odd_nodes() -> None:
    assert NodeFacts.from_node({}).gpu_allocatable == 0
    odd = NodeFacts.from_node({"status": {"allocatable": {"nvidia.com/gpu": "lots"}}})
    assert odd.gpu_allocatable == 0
    labelled = NodeFacts.from_node(
        {"metadata": {"labels": {"nvidia.com/gpu.memory": "16384"}}, "status": {}}
    )
    assert labelled.gpu_memory_mib == 16384


def test_preferred_node_names_tolerates_any_shape() -> None:
    assert preferred_node_names(_prepared(["a", "b", "a"])) == ["a", "b"]
    assert preferred_node_names({"resource": {"preferredNodes": "a"}}) == []
    assert preferred_node_names([]) == []
    assert preferred_node_names({"resource": {"preferredNodes": ["a", 3]}}) == ["a"]


# ----------------------------------------------------------------------------- updates


def test_adapters_may_change_on_update() -> None:
    old = default(seed.load(seed.FALCON_7B_ADAPTERS_FILLED))
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["strength"] = "0.7"
    new["inference"]["adapters"].append(
        {"source": {"name": "second", "image": seed.ADAPTER_IMAGE}, "strength": "0.1"}
    )
    assert validate_update(old, new, CTX) == []
    del new["inference"]["adapters"]
    assert validate_update(old, new, CTX) == []


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("inference", "preset", "name"), "phi-2", "inference.preset.name"),
        (("resource", "instanceType"), "Standard_NC24s_v3", "resource.instanceType"),
        (("resource", "count"), 2, "resource.count"),
        (("resource", "labelSelector", "matchLabels"), {"apps": "x"}, "resource.labelSelector"),
        (("inference", "preset", "accessMode"), "private", "inference.preset.accessMode"),
    ],
)
def test_immutable_fields(path: tuple[str, ...], value: Any, field: str) -> None:
    old = default(seed.load(seed.FALCON_7B))
    new = copy.deepcopy(old)
    node = new
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = validate_update(old, new, CTX)
    immutable = [e for e in errors if e.reason == "immutable"]
    assert [e.field for e in immutable] == [field]
    assert "is immutable (was " in str(immutable[0])
    assert "delete and re-create the Workspace" in str(immutable[0])


def test_preset_cannot_become_a_template() -> None:
    old = default(seed.load(seed.FALCON_7B))
    new = copy.deepcopy(old)
    del new["inference"]["preset"]
    new["inference"]["template"] = {"spec": {"containers": [{"name": "a", "image": "b"}]}}
    errors = validate_update(old, new, CTX)
    assert "inference.template: cannot replace inference.preset on update" in _messages(errors)


def test_update_rechecks_fit_when_the_runtime_changes() -> None:
    old = seed.load(seed.FALCON_7B)
    old["inference"]["preset"]["name"] = "llama-2-13b"
    old["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    old["resource"]["instanceType"] = "Standard_NC6s_v3"
    old = default(old)
    assert validate_create(old, CTX) == []
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][RUNTIME_ANNOTATION] = "transformers"
    text = _messages(validate_update(old, new, CTX))
    assert "the transformers runtime serves within one node" in text


def test_updates_are_not_blocked_by_a_narrower_allow_list() -> None:
    old = default(seed.load(seed.FALCON_7B_ADAPTERS_FILLED))
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["strength"] = "0.9"
    ctx = ValidationContext.default(
        AdminConfig(allowed_presets=frozenset({"phi-2"}), allowed_instance_types=frozenset({"x"}))
    )
    assert validate_update(old, new, ctx) == []
    assert validate_create(new, ctx) != []


def test_unchanged_adapters_are_not_judged_by_a_lower_limit() -> None:
    old = default(seed.load(seed.FALCON_7B_ADAPTERS_FILLED))
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["kaito.sh/cleanup"]
    ctx = ValidationContext.default(AdminConfig(max_adapters=0))
    assert validate_update(old, new, ctx) == []
    new["inference"]["adapters"][0]["strength"] = "0.3"
    assert "more than the 0 allowed" in _messages(validate_update(old, new, ctx))


def test_only_nodes_added_by_an_update_are_checked() -> None:
    old = default(_prepared(["gpu-1"]))
    new = copy.deepcopy(old)
    new["inference"]["adapters"] = [{"source": {"name": "a", "image": seed.ADAPTER_IMAGE}}]
    ctx = ValidationContext.default(nodes={"gpu-1": None, "gpu-2": None})
    assert validate_update(old, new, ctx) == []
    new["resource"]["preferredNodes"].append("gpu-2")
    assert "preferredNodes[1]: names a node that does not exist" in _messages(
        validate_update(old, new, ctx)
    )


# ----------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["metadata", "resource", "inference", "status", "spec"]), _json, max_size=5
    )
)
def test_validation_never_raises(obj: dict[str, Any]) -> None:
    errors = validate_create(obj, CTX)
    assert isinstance(errors, list)
    validate_update(obj, obj, CTX)


@settings(max_examples=60, deadline=None)
@given(
    strength=st.text(alphabet="0123456789.-e", min_size=1, max_size=5),
    name=st.text(alphabet="abcXYZ-_.0", min_size=1, max_size=10),
)
def test_adapter_fields_are_valid_or_refused_with_a_reason(strength: str, name: str) -> None:
    obj = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
    obj["inference"]["adapters"][0]["strength"] = strength
    obj["inference"]["adapters"][0]["source"]["name"] = name
    errors = validate_create(obj, CTX)
    for err in errors:
        assert err.reason in {"adapters.strength", "adapters.name"}
    from decimal import Decimal, InvalidOperation

    try:
        ok = (
            Decimal(strength) >= 0
            and Decimal(strength) <= 1
            and "e" not in strength
            and "-" not in strength
        )
    except InvalidOperation:
        ok = False
    strength_refused = any(e.reason == "adapters.strength" for e in errors)
    if strength.endswith(".") or strength.count(".") > 1 or strength.startswith("."):
        return  # grammar edge cases covered by test_parse_strength
    assert strength_refused == (not ok)


def test_catalog_fixture_consistency() -> None:
    assert CTX.presets is load_presets()
    assert len(CTX.skus) == len(load_skus())
