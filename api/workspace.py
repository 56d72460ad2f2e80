"""The Workspace (``kaito.sh/v1alpha1``): constants and typed, frozen views of the object.

The object keeps the seed's shape: ``resource``, ``inference`` and ``status`` at the top level,
no ``spec``. ``Workspace.from_dict`` reads a plain dict (as returned by the Kubernetes API or
``yaml.safe_load``) and raises ``WorkspaceParseError`` naming the path of the first value of
the wrong type; run ``api.validation.schema_errors`` first to get every shape error at once.
``to_dict`` writes the same dict back (absent optional fields stay absent).

The shape is declared once, in ``api.schema``; ``tests/api/test_schema_drift.py`` fails when
these dataclasses and the schema disagree (every dataclass field's camelCase name must be a
schema property and vice versa).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from api.errors import WorkspaceParseError
from api.readers import (
    put_present,
    read_int,
    read_list,
    read_obj,
    read_str,
    read_str_map,
    read_strs,
    required_obj,
    required_str,
)
from api.strength import parse_strength
from api.workspace_status import WorkspaceStatus

GROUP = "kaito.sh"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Workspace"
LIST_KIND = "WorkspaceList"
PLURAL = "workspaces"
SINGULAR = "workspace"
SHORT_NAMES = ("wk", "wks")
CATEGORIES = ("kaito",)

RUNTIME_ANNOTATION = "kaito.sh/runtime"
"""Annotation choosing the inference runtime; values are ``Runtime`` members."""

DEFAULT_ADAPTER_STRENGTH = "1.0"
DEFAULT_INSTANCE_TYPE = "Standard_NC12s_v3"
"""``resource.instanceType`` when a Workspace gives none (the seed API's
``+kubebuilder:default``); an admin's ``defaultInstanceType`` wins. Set by the mutating webhook
(not by the CRD schema, so that the admin setting can win and ``preferredNodes`` Workspaces stay
without one)."""
MODEL_ACCESS_SECRET_KEY = "HF_TOKEN"
"""The key of the ``presetOptions.modelAccessSecret`` Secret holding the Hugging Face token; the
runtime gets it as the environment variable of the same name (a ``secretKeyRef``)."""
INFERENCE_CONFIG_KEY = "inference_config.yaml"
"""The key of the ``inference.config`` ConfigMap that holds the runtime settings."""
MAX_ADAPTERS_LIMIT = 64
"""Hard ceiling of ``inference.adapters`` in the schema; admins may configure less (default 10)."""


class Runtime(StrEnum):
    """Values of the ``kaito.sh/runtime`` annotation."""

    VLLM = "vllm"
    TRANSFORMERS = "transformers"


class ConditionType(StrEnum):
    """``status.conditions[].type`` values written by the reconciler."""

    RESOURCE_READY = "ResourceReady"
    INFERENCE_READY = "InferenceReady"
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"


class AccessMode(StrEnum):
    """``inference.preset.accessMode``: where the model image comes from."""

    PUBLIC = "public"
    PRIVATE = "private"


class SelectorOperator(StrEnum):
    """``resource.labelSelector.matchExpressions[].operator`` values (as in metav1)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# ----------------------------------------------------------------------------- resource


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> LabelSelectorRequirement:
        key = required_str(obj.get("key"), f"{path}.key")
        operator = required_str(obj.get("operator"), f"{path}.operator")
        return cls(
            key=key, operator=operator, values=read_strs(obj.get("values"), f"{path}.values")
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        put_present(out, "values", list(self.values))
        return out


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> LabelSelector:
        exprs = []
        for i, item in enumerate(
            read_list(obj.get("matchExpressions"), f"{path}.matchExpressions")
        ):
            p = f"{path}.matchExpressions[{i}]"
            o = required_obj(item, p)
            exprs.append(LabelSelectorRequirement.from_dict(o, p))
        return cls(
            match_labels=read_str_map(obj.get("matchLabels"), f"{path}.matchLabels"),
            match_expressions=tuple(exprs),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_present(out, "matchLabels", dict(self.match_labels))
        put_present(out, "matchExpressions", [e.to_dict() for e in self.match_expressions])
        return out

    def label_map(self) -> dict[str, str]:
        """The selector as KAITO reads it: ``matchLabels`` plus every ``In`` expression with
        exactly one value. The other expressions are left out (``label_map_problems`` names
        them); a ``matchLabels`` entry wins over an ``In`` expression on the same key."""
        out: dict[str, str] = {}
        for e in self.match_expressions:
            if e.operator == SelectorOperator.IN and len(e.values) == 1:
                out.setdefault(e.key, e.values[0])
        out.update(self.match_labels)
        return out

    def label_map_problems(self) -> list[tuple[int, str]]:
        """``(index, why)`` for each expression that cannot become a node label: a provisioned
        node only gets the label map, so these are refused unless the Workspace lists
        ``preferredNodes`` (whose nodes only have to match)."""
        out: list[tuple[int, str]] = []
        for i, e in enumerate(self.match_expressions):
            if e.operator == SelectorOperator.IN:
                if len(e.values) > 1:
                    out.append(
                        (
                            i,
                            f"operator In has {len(e.values)} values; a provisioned node gets "
                            "one value per label key",
                        )
                    )
                elif e.key in self.match_labels and self.match_labels[e.key] != e.values[0]:
                    out.append((i, f"contradicts matchLabels {e.key}={self.match_labels[e.key]}"))
            else:
                out.append(
                    (
                        i,
                        f"operator {e.operator} cannot be turned into a label of a provisioned "
                        "node (only matchLabels and In with one value can)",
                    )
                )
        return out

    def same_label_map(self, other: LabelSelector) -> bool:
        """Equal as KAITO reads selectors: the same label map and the same other expressions
        (``matchLabels: {a: b}`` equals ``matchExpressions: [{key: a, operator: In,
        values: [b]}]``)."""

        def rest(sel: LabelSelector) -> set[tuple[str, str, tuple[str, ...]]]:
            return {
                (e.key, e.operator, tuple(sorted(e.values)))
                for e in sel.match_expressions
                if not (e.operator == SelectorOperator.IN and len(e.values) == 1)
            }

        return self.label_map() == other.label_map() and rest(self) == rest(other)


@dataclass(frozen=True)
class ResourceSpec:
    """Where the workload runs: a GPU instance type, or prepared (preferred) nodes."""

    instance_type: str | None = None
    label_selector: LabelSelector | None = None
    preferred_nodes: tuple[str, ...] = ()
    count: int | None = None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str = "resource") -> ResourceSpec:
        sel = read_obj(obj.get("labelSelector"), f"{path}.labelSelector")
        return cls(
            instance_type=read_str(obj.get("instanceType"), f"{path}.instanceType"),
            label_selector=None
            if sel is None
            else LabelSelector.from_dict(sel, f"{path}.labelSelector"),
            preferred_nodes=read_strs(obj.get("preferredNodes"), f"{path}.preferredNodes"),
            count=read_int(obj.get("count"), f"{path}.count"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_present(out, "count", self.count)
        put_present(out, "instanceType", self.instance_type)
        if self.label_selector is not None:
            out["labelSelector"] = self.label_selector.to_dict()
        put_present(out, "preferredNodes", list(self.preferred_nodes))
        return out


# ----------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class PresetOptions:
    image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    model_access_secret: str | None = None
    """A Secret in the Workspace's namespace whose ``HF_TOKEN`` key is the Hub token."""

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> PresetOptions:
        return cls(
            image=read_str(obj.get("image"), f"{path}.image"),
            image_pull_secrets=read_strs(obj.get("imagePullSecrets"), f"{path}.imagePullSecrets"),
            model_access_secret=read_str(obj.get("modelAccessSecret"), f"{path}.modelAccessSecret"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_present(out, "image", self.image)
        put_present(out, "imagePullSecrets", list(self.image_pull_secrets))
        put_present(out, "modelAccessSecret", self.model_access_secret)
        return out


@dataclass(frozen=True)
class PresetSpec:
    """A catalog model by name; ``accessMode: private`` plus ``presetOptions.image`` for a
    private copy of the model image."""

    name: str
    access_mode: str | None = None
    preset_options: PresetOptions = field(default_factory=PresetOptions)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> PresetSpec:
        name = required_str(obj.get("name"), f"{path}.name")
        opts = read_obj(obj.get("presetOptions"), f"{path}.presetOptions")
        return cls(
            name=name,
            access_mode=read_str(obj.get("accessMode"), f"{path}.accessMode"),
            preset_options=PresetOptions()
            if opts is None
            else PresetOptions.from_dict(opts, f"{path}.presetOptions"),
        )

    @property
    def private_image(self) -> str | None:
        return self.preset_options.image

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        put_present(out, "accessMode", self.access_mode)
        put_present(out, "presetOptions", self.preset_options.to_dict())
        return out


@dataclass(frozen=True)
class AdapterSource:
    name: str
    image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> AdapterSource:
        name = required_str(obj.get("name"), f"{path}.name")
        return cls(
            name=name,
            image=read_str(obj.get("image"), f"{path}.image"),
            image_pull_secrets=read_strs(obj.get("imagePullSecrets"), f"{path}.imagePullSecrets"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        put_present(out, "image", self.image)
        put_present(out, "imagePullSecrets", list(self.image_pull_secrets))
        return out


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter from an image (files under ``/data``), merged at ``strength``."""

    source: AdapterSource
    strength: str | None = None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str) -> AdapterSpec:
        src = required_obj(obj.get("source"), f"{path}.source")
        return cls(
            source=AdapterSource.from_dict(src, f"{path}.source"),
            strength=read_str(obj.get("strength"), f"{path}.strength"),
        )

    @property
    def name(self) -> str:
        return self.source.name

    def strength_value(self) -> Decimal:
        """The strength as a Decimal (``"1.0"`` when absent); raises ``StrengthError``."""
        return parse_strength(DEFAULT_ADAPTER_STRENGTH if self.strength is None else self.strength)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source.to_dict()}
        put_present(out, "strength", self.strength)
        return out


@dataclass(frozen=True)
class InferenceSpec:
    """Exactly one of ``preset`` or ``template`` (a PodTemplateSpec, kept as a plain dict)."""

    preset: PresetSpec | None = None
    template: Mapping[str, Any] | None = None
    config: str | None = None
    """A ConfigMap in the Workspace's namespace holding ``inference_config.yaml``."""
    adapters: tuple[AdapterSpec, ...] = ()

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str = "inference") -> InferenceSpec:
        preset = read_obj(obj.get("preset"), f"{path}.preset")
        template = read_obj(obj.get("template"), f"{path}.template")
        adapters = []
        for i, item in enumerate(read_list(obj.get("adapters"), f"{path}.adapters")):
            p = f"{path}.adapters[{i}]"
            o = required_obj(item, p)
            adapters.append(AdapterSpec.from_dict(o, p))
        return cls(
            preset=None if preset is None else PresetSpec.from_dict(preset, f"{path}.preset"),
            template=None if template is None else dict(template),
            config=read_str(obj.get("config"), f"{path}.config"),
            adapters=tuple(adapters),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.preset is not None:
            out["preset"] = self.preset.to_dict()
        if self.template is not None:
            out["template"] = dict(self.template)
        put_present(out, "config", self.config)
        put_present(out, "adapters", [a.to_dict() for a in self.adapters])
        return out


# ----------------------------------------------------------------------------- object


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of ``metadata`` the project reads. Not part of the CRD schema."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int | None = None
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], path: str = "metadata") -> ObjectMeta:
        return cls(
            name=read_str(obj.get("name"), f"{path}.name") or "",
            namespace=read_str(obj.get("namespace"), f"{path}.namespace") or "",
            uid=read_str(obj.get("uid"), f"{path}.uid") or "",
            generation=read_int(obj.get("generation"), f"{path}.generation"),
            resource_version=read_str(obj.get("resourceVersion"), f"{path}.resourceVersion") or "",
            labels=read_str_map(obj.get("labels"), f"{path}.labels"),
            annotations=read_str_map(obj.get("annotations"), f"{path}.annotations"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        put_present(out, "name", self.name or None)
        put_present(out, "namespace", self.namespace or None)
        put_present(out, "uid", self.uid or None)
        put_present(out, "generation", self.generation)
        put_present(out, "resourceVersion", self.resource_version or None)
        put_present(out, "labels", dict(self.labels))
        put_present(out, "annotations", dict(self.annotations))
        return out


@dataclass(frozen=True)
class Workspace:
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    resource: ResourceSpec = field(default_factory=ResourceSpec)
    inference: InferenceSpec | None = None
    status: WorkspaceStatus = field(default_factory=WorkspaceStatus)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Workspace:
        """Read a Workspace from a plain dict; raises ``WorkspaceParseError`` with the path."""
        if not isinstance(obj, Mapping):
            raise WorkspaceParseError(
                "", f"a Workspace must be an object, not {type(obj).__name__}"
            )
        meta = read_obj(obj.get("metadata"), "metadata")
        resource = read_obj(obj.get("resource"), "resource")
        inference = read_obj(obj.get("inference"), "inference")
        status = read_obj(obj.get("status"), "status")
        return cls(
            metadata=ObjectMeta() if meta is None else ObjectMeta.from_dict(meta),
            resource=ResourceSpec() if resource is None else ResourceSpec.from_dict(resource),
            inference=None if inference is None else InferenceSpec.from_dict(inference),
            status=WorkspaceStatus() if status is None else WorkspaceStatus.from_dict(status),
        )

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def runtime_annotation(self) -> str | None:
        """The raw ``kaito.sh/runtime`` annotation (``None`` when absent)."""
        return self.metadata.annotations.get(RUNTIME_ANNOTATION)

    def runtime(self, default: Runtime = Runtime.VLLM) -> Runtime:
        """The runtime to use: the annotation when it is valid, otherwise ``default``."""
        value = self.runtime_annotation
        try:
            return Runtime(value) if value is not None else default
        except ValueError:
            return default

    @property
    def preset_name(self) -> str | None:
        if self.inference is None or self.inference.preset is None:
            return None
        return self.inference.preset.name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
        put_present(out, "metadata", self.metadata.to_dict())
        out["resource"] = self.resource.to_dict()
        if self.inference is not None:
            out["inference"] = self.inference.to_dict()
        put_present(out, "status", self.status.to_dict())
        return out
