"""The CRD file, the schema and the dataclasses must agree (one definition of the shape)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from api import crd, workspace
from api.schema import closed_schema, workspace_schema

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crd"


@pytest.mark.parametrize("name", sorted(crd.rendered_files()))
def test_crd_files_are_generated_from_api(name: str) -> None:
    text = crd.rendered_files()[name]
    assert (CRD_DIR / name).read_text(encoding="utf-8") == text, (
        f"manifests/crd/{name} is stale: run `python -m api.crd`"
    )


def test_crd_check_mode_reports_drift(tmp_path: Path) -> None:
    assert crd.main(["--check", str(tmp_path)]) == 1
    assert crd.main([str(tmp_path)]) == 0
    assert crd.main(["--check", str(tmp_path)]) == 0
    (tmp_path / crd.WORKSPACE_CRD_FILE).write_text("edited\n")
    assert crd.main(["--check", str(tmp_path)]) == 1


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _dataclass_of(tp: Any) -> type | None:
    for arg in [tp, *typing.get_args(tp)]:
        for inner in [arg, *typing.get_args(arg)]:
            if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                return inner
    return None


def _check(cls: type, schema: dict[str, Any], path: str, seen: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    fields = {_camel(f.name): f for f in dataclasses.fields(cls)}
    props = schema.get("properties", {})
    assert set(fields) == set(props), (
        f"{path}: dataclass {cls.__name__} {sorted(fields)} vs schema {sorted(props)}"
    )
    for json_name, f in fields.items():
        sub = props[json_name]
        if sub.get("type") == "array":
            sub = sub["items"]
        inner = _dataclass_of(hints[f.name])
        if inner is not None:
            _check(inner, sub, f"{path}.{json_name}", seen)
        seen.append(f"{path}.{json_name}")


def test_dataclasses_and_schema_have_the_same_fields() -> None:
    schema = workspace_schema()
    seen: list[str] = []
    for top, cls in (
        ("resource", workspace.ResourceSpec),
        ("inference", workspace.InferenceSpec),
        ("status", workspace.WorkspaceStatus),
    ):
        _check(cls, schema["properties"][top], top, seen)
    top_fields = {f.name for f in dataclasses.fields(workspace.Workspace)}
    assert top_fields | {"apiVersion", "kind"} == set(schema["properties"])
    assert "inference.adapters.source.name" in seen
    assert "resource.labelSelector.matchExpressions.operator" in seen


def _walk(node: dict[str, Any], path: str = "") -> typing.Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("make", [crd.workspace_crd, crd.nodeclaim_crd])
def test_schemas_are_structural(make: Any) -> None:
    schema = make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, f"{path}: CRDs may not close objects"
        assert not node.get("uniqueItems"), f"{path}: uniqueItems is forbidden in CRDs"
        if "description" in node:
            assert node["description"].strip()


def test_closed_schema_refuses_unknown_fields_but_keeps_template_open() -> None:
    schema = closed_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["resource"]["additionalProperties"] is False
    template = schema["properties"]["inference"]["properties"]["template"]
    assert "additionalProperties" not in template
    assert "additionalProperties" not in schema["properties"]["metadata"]


def test_crd_metadata_and_printer_columns() -> None:
    doc = yaml.safe_load((CRD_DIR / crd.WORKSPACE_CRD_FILE).read_text())
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "workspaces.kaito.sh"
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[0] == "Instance"
    for need in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded", "Age"):
        assert need in columns
    assert "spec" not in version["schema"]["openAPIV3Schema"]["properties"]
    # jsonPath filters use the condition type constants
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert re.fullmatch(
        r'\.status\.conditions\[\?\(@\.type=="ResourceReady"\)\]\.status', paths["ResourceReady"]
    )


def test_nodeclaim_crd_has_the_fields_the_reconciler_uses() -> None:
    doc = yaml.safe_load((CRD_DIR / crd.NODECLAIM_CRD_FILE).read_text())
    assert doc["metadata"]["name"] == "nodeclaims.karpenter.sh"
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1"
    props = version["schema"]["openAPIV3Schema"]["properties"]
    assert {"requirements", "taints", "nodeClassRef", "resources"} <= set(
        props["spec"]["properties"]
    )
    assert {"nodeName", "providerID", "conditions"} <= set(props["status"]["properties"])
    assert doc["spec"]["scope"] == "Cluster"
