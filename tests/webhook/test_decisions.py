from __future__ import annotations

import copy
import json
from dataclasses import replace

from api.config import AdminConfig
from api.defaults import default
from api.validation import ValidationContext
from api.workspace import Runtime
from tests.api import seed
from tests.webhook.support import admission_review
from webhook import decisions
from webhook.jsonpatch import apply
from webhook.review import parse_review

CTX = ValidationContext.default()


def _req(obj: dict, **kw: object) -> decisions.AdmissionRequest:
    return parse_review(json.dumps(admission_review(obj, **kw)).encode())  # type: ignore[arg-type]


def test_mutate_sends_the_defaults_as_a_patch() -> None:
    obj = seed.load(seed.FALCON_7B_ADAPTERS)
    del obj["inference"]["adapters"][0]["strength"]
    decision = decisions.mutate(_req(obj), AdminConfig())
    assert decision.allowed
    assert decision.patch == [
        {"op": "add", "path": "/metadata/annotations", "value": {"kaito.sh/runtime": "vllm"}},
        {"op": "add", "path": "/inference/adapters/0/strength", "value": "1.0"},
    ]
    assert apply(obj, decision.patch) == default(obj)


def test_mutate_leaves_a_defaulted_object_alone() -> None:
    obj = default(seed.load(seed.FALCON_7B))
    assert decisions.mutate(_req(obj), AdminConfig()).patch == []
    cfg = AdminConfig(default_runtime=Runtime.TRANSFORMERS)
    assert decisions.mutate(_req(seed.load(seed.FALCON_7B)), cfg).patch[0]["value"] == {
        "kaito.sh/runtime": "transformers"
    }


def test_other_kinds_and_operations_pass() -> None:
    doc = admission_review({"metadata": {"name": "x"}})
    doc["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    req = parse_review(json.dumps(doc).encode())
    assert decisions.mutate(req, AdminConfig()) == decisions.ALLOW
    assert decisions.validate(req, CTX) == decisions.ALLOW
    delete = admission_review(None, operation="DELETE")
    req = parse_review(json.dumps(delete).encode())
    assert decisions.validate(req, CTX).allowed


def test_validate_lists_every_problem() -> None:
    one = decisions.validate(_req(default(seed.load(seed.FALCON_7B_ADAPTERS))), CTX)
    assert not one.allowed
    assert one.message.startswith("inference.adapters[0].source.image: is the documentation's")
    assert one.reasons == ["adapters.image"]
    obj = default(seed.load(seed.FALCON_7B_ADAPTERS))
    obj["inference"]["preset"]["name"] = "nope"
    two = decisions.validate(_req(obj), CTX)
    assert two.message.startswith("2 problems:\n- ")
    assert two.reasons == ["adapters.image", "preset.unknown"]


def test_warnings() -> None:
    obj = default(seed.load(seed.FALCON_7B))
    obj["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    assert decisions.validate(_req(obj), CTX).warnings == ()
    obj["inference"]["preset"]["name"] = "phi-3-mini-128k-instruct"
    obj["resource"]["instanceType"] = "Standard_NC4as_T4_v3"
    (warning,) = decisions.validate(_req(obj), CTX).warnings
    assert "phi-3-mini-128k-instruct will serve at most" in warning
    obj["inference"]["preset"]["name"] = "llama-2-7b"
    refused = decisions.validate(_req(obj), CTX)
    assert not refused.allowed
    assert "gated Hugging Face model (meta-llama/Llama-2-7b-hf)" in str(refused.message)
    obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert decisions.validate(_req(obj), CTX).allowed


def test_gpus_too_old_for_the_default_images_are_warned_about() -> None:
    obj = default(seed.load(seed.FALCON_7B))  # Standard_NC6s_v3: V100, compute capability 7.0
    (warning,) = decisions.validate(_req(obj), CTX).warnings
    assert "Standard_NC6s_v3 has NVIDIA V100 16GB GPUs" in warning
    assert "compute capability 7.0" in warning
    assert "set vllmImage in the kaito-config ConfigMap to an image built for CUDA 12" in warning
    own = AdminConfig(runtime_images={Runtime.VLLM: "registry.example/vllm-cu126:1"})
    assert decisions.validate(_req(obj), replace(CTX, config=own)).warnings == ()
    obj["metadata"]["annotations"]["kaito.sh/runtime"] = "transformers"
    (warning,) = decisions.validate(_req(obj), replace(CTX, config=own)).warnings
    assert "set transformersImage" in warning


def test_nodes_to_look_up() -> None:
    obj = default(seed.load(seed.FALCON_7B))
    obj["resource"]["preferredNodes"] = ["a", "b", "Not_A_Node"]
    assert decisions.nodes_to_look_up(_req(obj)) == ["a", "b"]
    old = copy.deepcopy(obj)
    old["resource"]["preferredNodes"] = ["a"]
    assert decisions.nodes_to_look_up(_req(obj, operation="UPDATE", old=old)) == ["b"]


def test_update_decision() -> None:
    old = default(seed.load(seed.FALCON_7B))
    new = copy.deepcopy(old)
    new["resource"]["instanceType"] = "Standard_NC24s_v3"
    d = decisions.validate(_req(new, operation="UPDATE", old=old), CTX)
    assert not d.allowed
    assert d.reasons == ["immutable"]


def test_an_object_being_deleted_is_never_blocked() -> None:
    old = default(seed.load(seed.FALCON_7B))
    new = copy.deepcopy(old)
    new["resource"]["instanceType"] = "changed"
    new["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert decisions.validate(_req(new, operation="UPDATE", old=old), CTX).allowed
    del new["metadata"]["deletionTimestamp"]
    assert not decisions.validate(_req(new, operation="UPDATE", old=old), CTX).allowed
