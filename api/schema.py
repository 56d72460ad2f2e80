"""The Workspace's openAPIV3Schema: the single definition of its shape.

``api.crd`` renders it into ``manifests/crd/kaito.sh_workspaces.yaml`` (the apiserver enforces
it, prunes or, with kubectl's default strict field validation, refuses unknown fields);
``api.validation.schema_errors`` enforces the same schema with ``jsonschema`` wherever a
Workspace is read without an apiserver. The schema is structural: every field has a type,
``inference.template`` (a PodTemplateSpec) keeps its contents with
``x-kubernetes-preserve-unknown-fields``.

Only shape lives here (types, enums, bounds, required keys). Semantic rules (the catalog, sizing,
adapters, nodes, updates) are in ``api.validation`` so that their messages can name the fix.
"""

from __future__ import annotations

import copy
from typing import Any

from api.workspace import (
    DEFAULT_INSTANCE_TYPE,
    INFERENCE_CONFIG_KEY,
    MAX_ADAPTERS_LIMIT,
    MODEL_ACCESS_SECRET_KEY,
    AccessMode,
    SelectorOperator,
)

_STR_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def _secrets(what: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"Names of Secrets in the Workspace's namespace used to pull {what}.",
        "maxItems": 16,
        "items": {"type": "string", "maxLength": 253},
    }


_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "description": (
        "Labels of the GPU nodes for this Workspace, read as a label map: matchLabels plus "
        "matchExpressions with operator In and exactly one value (the two forms are "
        "equivalent). Nodes the controller provisions get these labels; other expressions "
        "(In with several values, NotIn, Exists, DoesNotExist) cannot label a node and are "
        "allowed only with preferredNodes, whose nodes must match the whole selector."
    ),
    "x-kubernetes-map-type": "atomic",
    "properties": {
        "matchLabels": {
            "type": "object",
            "description": "Label key/value pairs every node must carry.",
            "additionalProperties": {"type": "string"},
        },
        "matchExpressions": {
            "type": "array",
            "description": (
                "Label selector requirements, ANDed with matchLabels. Without preferredNodes "
                "only In with one value (the same as a matchLabels entry)."
            ),
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string", "description": "The label key."},
                    "operator": {
                        "type": "string",
                        "description": "How the key relates to the values.",
                        "enum": [op.value for op in SelectorOperator],
                    },
                    "values": {
                        **_STR_LIST,
                        "description": "Values for In and NotIn; none for Exists, DoesNotExist.",
                    },
                },
            },
        },
    },
}

_RESOURCE: dict[str, Any] = {
    "type": "object",
    "description": "The GPU nodes the inference workload runs on.",
    "required": ["labelSelector"],
    "properties": {
        "count": {
            "type": "integer",
            "description": (
                "Number of GPU nodes. Defaults to the number the chosen preset needs on the "
                "instance type (1 for a model that fits in one node)."
            ),
            "minimum": 1,
            "maximum": 64,
        },
        "instanceType": {
            "type": "string",
            "description": (
                "GPU node SKU to provision, e.g. Standard_NC12s_v3 or g5.12xlarge (or, for the "
                "CPU-capable presets, a CPU SKU such as Standard_D8s_v5 or m7i.2xlarge). Default "
                f"(set by the admission webhook when the Workspace lists no preferredNodes): "
                f"the cluster admin's defaultInstanceType, else {DEFAULT_INSTANCE_TYPE}. "
                "With preferredNodes and no instanceType nothing is provisioned."
            ),
            "maxLength": 128,
        },
        "labelSelector": _LABEL_SELECTOR,
        "preferredNodes": {
            "type": "array",
            "description": (
                "Names of prepared GPU nodes to use instead of provisioning. Each must exist, "
                "carry every labelSelector.matchLabels label and report nvidia.com/gpu "
                "allocatable above zero (CPU nodes serve a CPU-capable preset when instanceType "
                "names their CPU SKU)."
            ),
            "maxItems": 64,
            "items": {"type": "string", "maxLength": 253},
            "x-kubernetes-list-type": "set",
        },
    },
}

_PRESET: dict[str, Any] = {
    "type": "object",
    "description": "A model from the preset catalog, served with preset settings.",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "description": "Preset model name, e.g. falcon-7b or mistral-7b-instruct.",
            "maxLength": 128,
        },
        "accessMode": {
            "type": "string",
            "description": (
                "public (default): the model comes from the public source. private: the "
                "model image is presetOptions.image."
            ),
            "enum": [m.value for m in AccessMode],
        },
        "presetOptions": {
            "type": "object",
            "description": (
                "A private model image and its pull secrets; the Secret with the token for "
                "gated models."
            ),
            "properties": {
                "modelAccessSecret": {
                    "type": "string",
                    "description": (
                        "Name of a Secret in the Workspace's namespace whose "
                        f"{MODEL_ACCESS_SECRET_KEY} key holds a Hugging Face token; required for "
                        "gated presets (llama-2). The runtime gets it as the "
                        f"{MODEL_ACCESS_SECRET_KEY} environment variable (a secretKeyRef)."
                    ),
                    "maxLength": 253,
                },
                "image": {
                    "type": "string",
                    "description": "Image holding the model weights.",
                    "maxLength": 512,
                },
                "imagePullSecrets": _secrets("the model image"),
            },
        },
    },
}

_ADAPTER: dict[str, Any] = {
    "type": "object",
    "description": "A LoRA adapter merged into the model weights at the given strength.",
    "required": ["source"],
    "properties": {
        "source": {
            "type": "object",
            "description": "Where the adapter comes from; only images are supported.",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "description": "Adapter name (a DNS-1123 label, unique in the Workspace).",
                    "maxLength": 63,
                },
                "image": {
                    "type": "string",
                    "description": "Image with the adapter files under /data.",
                    "maxLength": 512,
                },
                "imagePullSecrets": _secrets("the adapter image"),
            },
        },
        "strength": {
            "type": "string",
            "description": (
                'Multiplier of the adapter weights, a decimal string from "0" to "1". '
                'Defaults to "1.0".'
            ),
            "maxLength": 32,
        },
    },
}

_INFERENCE: dict[str, Any] = {
    "type": "object",
    "description": "The model to serve: exactly one of preset or template, plus adapters.",
    "properties": {
        "preset": _PRESET,
        "template": {
            "type": "object",
            "description": (
                "A PodTemplateSpec for a custom inference workload, instead of a preset."
            ),
            "x-kubernetes-preserve-unknown-fields": True,
        },
        "config": {
            "type": "string",
            "description": (
                "Name of a ConfigMap in the Workspace's namespace whose "
                f"{INFERENCE_CONFIG_KEY} key holds the runtime settings (preset Workspaces): a "
                "vllm: section (engine arguments such as max-model-len, gpu-memory-utilization, "
                "max-lora-rank) and a transformers: section (max-model-len, max-num-seqs, ...). "
                "Checked at admission and by the controller; a change rolls the Pods out. The "
                "README lists every key."
            ),
            "maxLength": 253,
        },
        "adapters": {
            "type": "array",
            "description": "LoRA adapters applied to the preset model.",
            "maxItems": MAX_ADAPTERS_LIMIT,
            "items": _ADAPTER,
        },
    },
}

_CONDITION: dict[str, Any] = {
    "type": "object",
    "description": "A metav1.Condition.",
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "properties": {
        "type": {
            "type": "string",
            "description": "ResourceReady, InferenceReady or WorkspaceSucceeded.",
            "maxLength": 316,
        },
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "maxLength": 1024},
        "message": {"type": "string", "maxLength": 32768},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    },
}

_STATUS: dict[str, Any] = {
    "type": "object",
    "description": "Observed state, written by the controller.",
    "properties": {
        "workerNodes": {
            "type": "array",
            "description": "Nodes running the workload.",
            "items": {"type": "string"},
        },
        "conditions": {
            "type": "array",
            "description": "ResourceReady, InferenceReady and WorkspaceSucceeded.",
            "items": _CONDITION,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    },
}

_WORKSPACE: dict[str, Any] = {
    "type": "object",
    "description": (
        "A Workspace serves one model (a preset or a custom Pod template) on GPU nodes, "
        "behind a ClusterIP Service named after the Workspace."
    ),
    "required": ["resource", "inference"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "resource": _RESOURCE,
        "inference": _INFERENCE,
        "status": _STATUS,
    },
}


def workspace_schema() -> dict[str, Any]:
    """A fresh copy of the Workspace openAPIV3Schema (callers may mutate it)."""
    return copy.deepcopy(_WORKSPACE)


def closed_schema() -> dict[str, Any]:
    """The schema with ``additionalProperties: false`` on every object that lists properties
    and does not preserve unknown fields: what the apiserver's strict field validation
    refuses, for ``jsonschema`` (a CRD schema itself may not say ``additionalProperties: false``).
    ``metadata`` stays open."""
    schema = workspace_schema()

    def close(node: dict[str, Any]) -> None:
        if node.get("type") == "object" and "properties" in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for child in node["properties"].values():
                close(child)
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            close(node["items"])

    close(schema)
    return schema
