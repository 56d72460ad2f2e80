"""Reading the install manifests without a cluster (pure helpers for the install tests).

``install_objects()`` follows ``manifests/kustomization.yaml`` (plain file resources only, which
is all it uses) and returns every object in order; ``find`` picks one by kind and name.
``container_env`` resolves a container's ``env`` the way the kubelet does for the cases the
Deployment uses (literal values, ``$(VAR)`` references to earlier variables and the
``metadata.namespace``/``metadata.name`` downward API).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
IMAGES = MANIFESTS / "images"
NAMESPACE = "kaito-system"

Obj = dict[str, Any]


def kustomization(directory: Path = MANIFESTS) -> Obj:
    doc: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return doc


def resource_files(directory: Path = MANIFESTS) -> list[Path]:
    return [directory / r for r in kustomization(directory).get("resources") or []]


def load_all(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def install_objects(directory: Path = MANIFESTS) -> list[Obj]:
    """Every object the kustomization installs (before kustomize adds its common labels)."""
    return [obj for path in resource_files(directory) for obj in load_all(path)]


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{len(hits)} objects of kind {kind} named {name}"
    return hits[0]


def container(deployment: Obj, name: str) -> Obj:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return dict(c)
    raise KeyError(f"no container {name!r}")


_REF = re.compile(r"\$\((\w+)\)")


def container_env(c: Obj, *, namespace: str = NAMESPACE, pod: str = "pod-0") -> dict[str, str]:
    """The container's environment as the kubelet would set it."""
    env: dict[str, str] = {}
    for var in c.get("env") or []:
        if "value" in var:
            env[var["name"]] = _REF.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = {"metadata.namespace": namespace, "metadata.name": pod}[path]
    return env


def command_module(c: Obj) -> str:
    """``webhook`` for a command ``[python, -m, webhook]``."""
    command = list(c["command"])
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def rules(objs: list[Obj], kind: str, name: str) -> list[Obj]:
    return list(find(objs, kind, name)["rules"])


def allowed(
    rule_list: list[Obj], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    """Whether any rule grants ``verb`` on ``group/resource`` (and object ``name``)."""
    for r in rule_list:
        if group not in r["apiGroups"] or resource not in r["resources"]:
            continue
        if verb not in r["verbs"]:
            continue
        names = r.get("resourceNames")
        if names is None or (name is not None and name in names):
            return True
    return False
