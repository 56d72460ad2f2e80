"""A table of bad Workspaces with the message each must be refused with.

Shared by the pure validation tests and the real-apiserver tests (``kubectl apply``).
``layer`` says who refuses it in a cluster: ``schema`` (the apiserver, from the CRD schema;
its wording differs, see ``kubectl``) or ``webhook`` (our validating webhook, ``expect`` verbatim).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.api import seed

Obj = dict[str, Any]


def base(name: str = "ws-bad") -> Obj:
    obj = seed.load(seed.FALCON_7B_ADAPTERS_FILLED)
    obj["metadata"]["name"] = name
    return obj


@dataclass(frozen=True)
class Case:
    id: str
    edit: Callable[[Obj], Any]
    expect: str
    """A substring of our validator's message (``str(FieldError)``)."""
    layer: str = "webhook"
    kubectl: str | None = None
    """A substring of kubectl's output when the apiserver (schema) refuses it."""

    def build(self) -> Obj:
        obj = base(f"bad-{self.id}"[:63])
        self.edit(obj)
        return obj


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        node: Any = obj
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = keys[-1]
        if last.isdigit():
            node[int(last)] = copy.deepcopy(value)
        else:
            node[last] = copy.deepcopy(value)

    return edit


def _del(path: str) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        node: Any = obj
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[keys[-1]]

    return edit


def _all(*edits: Callable[[Obj], Any]) -> Callable[[Obj], None]:
    def edit(obj: Obj) -> None:
        for e in edits:
            e(obj)

    return edit


def _adapter(name: str, image: str = seed.ADAPTER_IMAGE, strength: str = "0.5") -> Obj:
    return {"source": {"name": name, "image": image}, "strength": strength}


RUNTIME = "metadata.annotations"
TEMPLATE = {"spec": {"containers": [{"name": "main", "image": "registry.example.com/app:1"}]}}

CASES: list[Case] = [
    Case(
        "no-inference",
        _del("inference"),
        "inference: is required",
        "schema",
        "inference: Required value",
    ),
    Case("empty-inference", _set("inference", {}), "inference: sets neither preset nor template"),
    Case(
        "preset-and-template",
        _set("inference.template", TEMPLATE),
        "inference: sets both preset and template",
    ),
    Case(
        "unknown-preset",
        _set("inference.preset.name", "falcon-8b"),
        "inference.preset.name: is not a model in the preset catalog (did you mean falcon-7b",
    ),
    Case(
        "preset-wrong-case",
        _set("inference.preset.name", "Falcon-7B"),
        "did you mean falcon-7b",
    ),
    Case(
        "unknown-instance-type",
        _set("resource.instanceType", "Standard_NC6s_v9"),
        "resource.instanceType: is not a GPU instance type this cluster knows (did you mean "
        "Standard_NC6s_v3",
    ),
    Case(
        "mistral-on-one-v100",
        _all(
            _set("inference.preset.name", "mistral-7b"),
            _del("inference.adapters"),
            _set("resource.instanceType", "Standard_NC6s_v3"),
        ),
        "resource.instanceType: is too small for mistral-7b with the vllm runtime",
    ),
    Case(
        "gpu-preset-on-cpu-sku",
        _set("resource.instanceType", "Standard_D8s_v5"),
        "resource.instanceType: is a CPU-only instance type (Standard_D8s_v5 (CPU only: 8 "
        "vCPUs, 32 GiB memory)) and preset falcon-7b needs GPUs",
    ),
    Case(
        "falcon-40b-on-two-v100",
        _all(_set("inference.preset.name", "falcon-40b"), _del("inference.adapters")),
        "resource.instanceType: is too small for falcon-40b",
    ),
    Case(
        "transformers-multinode",
        _all(
            _set("inference.preset.name", "llama-2-13b"),
            _del("inference.adapters"),
            _set("resource.instanceType", "Standard_NC6s_v3"),
            _set(f"{RUNTIME}", {"kaito.sh/runtime": "transformers"}),
        ),
        "the transformers runtime serves within one node, but llama-2-13b needs 2 nodes",
    ),
    Case(
        "count-below-needed",
        _all(
            _set("inference.preset.name", "llama-2-13b"),
            _del("inference.adapters"),
            _set("resource.instanceType", "Standard_NC6s_v3"),
            _set("resource.count", 1),
        ),
        "resource.count: 1 is fewer than the 2 nodes of Standard_NC6s_v3",
    ),
    Case(
        "bad-runtime",
        _set(RUNTIME, {"kaito.sh/runtime": "tensorrt"}),
        "metadata.annotations[kaito.sh/runtime]: is not a runtime",
    ),
    Case(
        "no-label-selector",
        _del("resource.labelSelector"),
        "resource.labelSelector: is required",
        "schema",
        "resource.labelSelector: Required value",
    ),
    Case(
        "empty-match-labels",
        _set("resource.labelSelector", {"matchLabels": {}}),
        "resource.labelSelector.matchLabels: must list at least one label",
    ),
    Case(
        "bad-label-key",
        _set("resource.labelSelector.matchLabels", {"bad key": "x"}),
        "label key 'bad key'",
    ),
    Case(
        "bad-label-value",
        _set("resource.labelSelector.matchLabels", {"apps": "-falcon-"}),
        "resource.labelSelector.matchLabels.apps: label value must be empty or consist",
    ),
    Case(
        "in-without-values",
        _set("resource.labelSelector.matchExpressions", [{"key": "zone", "operator": "In"}]),
        "must not be empty for operator In",
    ),
    Case(
        "notin-without-preferred-nodes",
        _set(
            "resource.labelSelector.matchExpressions",
            [{"key": "zone", "operator": "NotIn", "values": ["a"]}],
        ),
        "resource.labelSelector.matchExpressions[0]: cannot label the GPU nodes the controller "
        "provisions: operator NotIn cannot be turned into a label of a provisioned node",
    ),
    Case(
        "exists-without-preferred-nodes",
        _set("resource.labelSelector.matchExpressions", [{"key": "zone", "operator": "Exists"}]),
        "fix: use matchLabels {zone: VALUE} (or operator In with one value), or list prepared "
        "nodes in resource.preferredNodes",
    ),
    Case(
        "in-with-two-values",
        _set(
            "resource.labelSelector.matchExpressions",
            [{"key": "zone", "operator": "In", "values": ["a", "b"]}],
        ),
        "resource.labelSelector.matchExpressions[0]: cannot label the GPU nodes the controller "
        "provisions: operator In has 2 values",
    ),
    Case(
        "in-contradicts-match-labels",
        _set(
            "resource.labelSelector.matchExpressions",
            [{"key": "apps", "operator": "In", "values": ["other"]}],
        ),
        "contradicts matchLabels apps=falcon-7b",
    ),
    Case(
        "gated-preset-without-token",
        _all(
            _set("inference.preset.name", "llama-2-7b"),
            _del("inference.adapters"),
        ),
        "inference.preset.presetOptions.modelAccessSecret: is required for llama-2-7b, a gated "
        "Hugging Face model (meta-llama/Llama-2-7b-hf)",
    ),
    Case(
        "model-access-secret-bad-name",
        _set("inference.preset.presetOptions", {"modelAccessSecret": "Bad_Name"}),
        "inference.preset.presetOptions.modelAccessSecret: is not a Secret name",
    ),
    Case(
        "bad-selector-operator",
        _set("resource.labelSelector.matchExpressions", [{"key": "zone", "operator": "Equals"}]),
        "must be one of In, NotIn, Exists, DoesNotExist",
        "schema",
        'resource.labelSelector.matchExpressions[0].operator: Unsupported value: "Equals"',
    ),
    Case(
        "seed-placeholder-image",
        _set("inference.adapters.0.source.image", "<YOUR_IMAGE>"),
        "inference.adapters[0].source.image: is the documentation's placeholder, not an image "
        '(got "<YOUR_IMAGE>"); fix: replace <YOUR_IMAGE> with your adapter image',
    ),
    Case(
        "adapter-without-image",
        _del("inference.adapters.0.source.image"),
        "only images are supported as adapter sources",
    ),
    Case(
        "adapter-bad-image",
        _set("inference.adapters.0.source.image", "Registry/UPPER:tag"),
        "is not a valid image reference",
    ),
    Case(
        "adapter-bad-name",
        _set("inference.adapters.0.source.name", "Falcon_Adapter"),
        "inference.adapters[0].source.name: must consist of lowercase letters",
    ),
    Case(
        "adapter-duplicate-name",
        _set("inference.adapters", [_adapter("a1"), _adapter("a1")]),
        "inference.adapters[1].source.name: repeats the name of inference.adapters[0]",
    ),
    Case(
        "strength-above-one",
        _set("inference.adapters.0.strength", "1.5"),
        "inference.adapters[0].strength: strength '1.5' is out of range",
    ),
    Case(
        "strength-not-decimal",
        _set("inference.adapters.0.strength", "high"),
        "strength 'high' is not a decimal number",
    ),
    Case(
        "strength-negative",
        _set("inference.adapters.0.strength", "-0.1"),
        "strength '-0.1' is not a decimal number",
    ),
    Case(
        "strength-boolean",
        _set("inference.adapters.0.strength", True),
        "inference.adapters[0].strength: must be of type string",
        "schema",
        ".inference.adapters[0].strength: expected string",
    ),
    Case(
        "too-many-adapters",
        _set("inference.adapters", [_adapter(f"a{i}") for i in range(11)]),
        "inference.adapters: lists 11 adapters, more than the 10 allowed",
    ),
    Case(
        "adapters-with-template",
        _all(_del("inference.preset"), _set("inference.template", TEMPLATE)),
        "inference.adapters: adapters apply to preset models only",
    ),
    Case(
        "template-without-containers",
        _all(
            _del("inference.preset"),
            _del("inference.adapters"),
            _set("inference.template", {"spec": {}}),
        ),
        "inference.template.spec.containers: a Pod template needs at least one container",
    ),
    Case(
        "unknown-top-level-spec",
        _set("spec", {"resource": {}}),
        "spec: is not a field of a Workspace",
        "schema",
        ".spec: field not declared in schema",
    ),
    Case(
        "typo-in-resource",
        _set("resource.instancetype", "Standard_NC6s_v3"),
        "resource.instancetype: is not a field of a Workspace",
        "schema",
        ".resource.instancetype: field not declared in schema",
    ),
    Case(
        "count-zero",
        _set("resource.count", 0),
        "resource.count: violates the schema (minimum 1)",
        "schema",
        "resource.count in body should be greater than or equal to 1",
    ),
    Case(
        "count-string",
        _set("resource.count", "two"),
        "resource.count: must be of type integer",
        "schema",
        ".resource.count: expected numeric",
    ),
    Case(
        "name-not-dns1035",
        _set("metadata.name", "1-workspace"),
        "metadata.name: must consist of lowercase letters, digits and '-', start with a letter",
    ),
    Case(
        "private-without-image",
        _set("inference.preset.accessMode", "private"),
        "inference.preset.presetOptions.image: is required when accessMode is private",
    ),
    Case(
        "preset-image-placeholder",
        _set("inference.preset.presetOptions", {"image": "<YOUR_MODEL_IMAGE>"}),
        "inference.preset.presetOptions.image: is a documentation placeholder",
    ),
    Case(
        "bad-access-mode",
        _set("inference.preset.accessMode", "secret"),
        "inference.preset.accessMode: must be one of public, private",
        "schema",
        'inference.preset.accessMode: Unsupported value: "secret"',
    ),
    Case(
        "preferred-node-listed-twice",
        _set("resource.preferredNodes", ["gpu-1", "gpu-1"]),
        "resource.preferredNodes[1]: is listed twice",
        "schema",
        '.resource.preferredNodes: duplicate entries for key [="gpu-1"]',
    ),
    Case(
        "preferred-node-bad-name",
        _set("resource.preferredNodes", ["GPU_Node"]),
        "resource.preferredNodes[0]: is not a node name",
    ),
    Case(
        "count-above-preferred-nodes",
        _all(
            _del("resource.instanceType"),
            _set("resource.preferredNodes", ["gpu-1"]),
            _set("resource.count", 2),
        ),
        "resource.count: asks for 2 nodes but preferredNodes lists 1",
    ),
    Case(
        "bad-pull-secret",
        _set("inference.adapters.0.source.imagePullSecrets", ["My Secret"]),
        "inference.adapters[0].source.imagePullSecrets[0]: is not a Secret name",
    ),
]
