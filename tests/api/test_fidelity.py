"""Issue 12: the seed API's instanceType default, label selectors read as a label map (as
KAITO reads them), and presetOptions.modelAccessSecret for gated presets."""

from __future__ import annotations

from typing import Any

from api.config import AdminConfig
from api.defaults import default
from api.validation import NodeFacts, ValidationContext, validate_create, validate_update
from api.workspace import DEFAULT_INSTANCE_TYPE, LabelSelector
from tests.api import seed

CTX = ValidationContext.default()

IN_FORM = [{"key": "apps", "operator": "In", "values": ["falcon-7b"]}]


def _falcon(**resource: Any) -> dict[str, Any]:
    obj = seed.load(seed.FALCON_7B)
    obj["resource"].update(resource)
    return obj


def _msgs(errors: list[Any]) -> str:
    return "\n".join(map(str, errors))


def test_instance_type_defaults_to_the_seed_api_default_and_the_admin_setting_wins() -> None:
    obj = _falcon()
    del obj["resource"]["instanceType"]
    out = default(obj)
    assert out["resource"]["instanceType"] == DEFAULT_INSTANCE_TYPE == "Standard_NC12s_v3"
    assert validate_create(out, CTX) == []
    admin = default(obj, AdminConfig(default_instance_type="Standard_NC24ads_A100_v4"))
    assert admin["resource"]["instanceType"] == "Standard_NC24ads_A100_v4"
    # preferredNodes without an instance type keep none: nothing is provisioned for them
    obj["resource"]["preferredNodes"] = ["gpu-1"]
    assert "instanceType" not in default(obj)["resource"]
    assert validate_create(default(obj), CTX) == []


def test_single_value_in_expressions_are_a_label_map() -> None:
    sel = LabelSelector.from_dict(
        {"matchExpressions": [*IN_FORM, {"key": "tier", "operator": "In", "values": ["a"]}]},
        "s",
    )
    assert sel.label_map() == {"apps": "falcon-7b", "tier": "a"}
    assert sel.label_map_problems() == []
    both = LabelSelector.from_dict(
        {"matchLabels": {"apps": "falcon-7b"}, "matchExpressions": IN_FORM}, "s"
    )
    assert both.label_map() == {"apps": "falcon-7b"}
    assert both.label_map_problems() == []
    obj = _falcon(labelSelector={"matchExpressions": IN_FORM})
    assert validate_create(default(obj), CTX) == []


def test_rewriting_match_labels_into_in_form_is_not_an_immutable_change() -> None:
    old = default(_falcon())
    new = default(_falcon(labelSelector={"matchExpressions": IN_FORM}))
    assert validate_update(old, new, CTX) == []
    assert validate_update(new, old, CTX) == []
    changed = default(
        _falcon(
            labelSelector={
                "matchExpressions": [{"key": "apps", "operator": "In", "values": ["other"]}]
            }
        )
    )
    out = _msgs(validate_update(old, changed, CTX))
    assert "resource.labelSelector: is immutable" in out


def test_expressions_that_cannot_label_a_node_are_refused_unless_preferred_nodes() -> None:
    exprs = [
        *IN_FORM,
        {"key": "zone", "operator": "NotIn", "values": ["z1"]},
        {"key": "gpu", "operator": "Exists"},
    ]
    obj = default(_falcon(labelSelector={"matchExpressions": exprs}))
    out = _msgs(validate_create(obj, CTX))
    assert (
        "resource.labelSelector.matchExpressions[1]: cannot label the GPU nodes the controller "
        "provisions: operator NotIn cannot be turned into a label"
    ) in out
    assert '(got {"key": "zone", "operator": "NotIn", "values": ["z1"]})' in out
    assert "resource.labelSelector.matchExpressions[2]: cannot label" in out
    assert "or list prepared nodes in resource.preferredNodes" in out

    prepared = _falcon(labelSelector={"matchExpressions": exprs}, preferredNodes=["gpu-1"])
    del prepared["resource"]["instanceType"]
    labels = {"apps": "falcon-7b", "zone": "z2", "gpu": "yes"}
    ctx = ValidationContext.default(
        nodes={"gpu-1": NodeFacts("gpu-1", labels=labels, gpu_allocatable=1)}
    )
    assert validate_create(default(prepared), ctx) == []
    wrong = ValidationContext.default(
        nodes={"gpu-1": NodeFacts("gpu-1", labels={**labels, "zone": "z1"}, gpu_allocatable=1)}
    )
    assert "node gpu-1 does not match resource.labelSelector (zone NotIn ['z1'])" in _msgs(
        validate_create(default(prepared), wrong)
    )


def test_gated_presets_need_a_model_access_secret() -> None:
    obj = _falcon()
    obj["inference"]["preset"]["name"] = "llama-2-7b"
    obj["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    out = _msgs(validate_create(default(obj), CTX))
    assert "inference.preset.presetOptions.modelAccessSecret: is required for llama-2-7b" in out
    assert "--from-literal=HF_TOKEN=hf_..." in out
    obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert validate_create(default(obj), CTX) == []
    # a private image holds the weights: no token needed
    obj["inference"]["preset"] = {
        "name": "llama-2-7b",
        "accessMode": "private",
        "presetOptions": {"image": "example.com/models/llama-2-7b:1"},
    }
    assert validate_create(default(obj), CTX) == []
    # an update that drops the secret is refused too
    old = default(_falcon())
    old["inference"]["preset"] = {"name": "llama-2-7b", "presetOptions": {"modelAccessSecret": "t"}}
    old["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    new = default(old)
    new["inference"]["preset"] = {"name": "llama-2-7b"}
    assert "modelAccessSecret: is required" in _msgs(validate_update(old, new, CTX))
