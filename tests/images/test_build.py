"""The builder's pure parts: input keys, the failing step of a build log, pip's CA bundle,
and the refusals that name what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import build
from tests.images.errors import ImageError
from tests.install.manifests import IMAGES

BUILDAH_FAILURE = """\
STEP 1/14: FROM oci-archive:/root/.cache/kaito-py/images/base-1.oci.tar
STEP 2/14: ENV PYTHONDONTWRITEBYTECODE=1     PYTHONUNBUFFERED=1
STEP 3/14: COPY manifests/images/controller.requirements.txt /tmp/requirements.txt
STEP 4/14: RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.
error building at STEP "RUN pip install ...": exit status 1
"""


def test_the_failing_step_is_the_last_one_buildah_started() -> None:
    assert build.failing_step(BUILDAH_FAILURE) == (
        "STEP 4/14: RUN pip install --require-hashes --no-deps --only-binary=:all: "
        "-r /tmp/requirements.txt"
    )
    assert build.failing_step("Error: no such file\n") is None


def test_pip_cert_is_read_from_pip_config_list() -> None:
    listing = (
        ":env:.cert='/env/bundle.crt'\n"
        ":env:.default-timeout='180'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
    )
    assert build.pip_cert_from_config(listing) == "/etc/ssl/certs/ca-certificates.crt"
    assert build.pip_cert_from_config("global.index-url='https://x'\n") is None


def test_keys_change_with_any_input_and_only_then() -> None:
    one = build.hash_inputs([("a", b"1"), ("b", b"2")])
    assert one == build.hash_inputs([("b", b"2"), ("a", b"1")])
    assert one != build.hash_inputs([("a", b"1"), ("b", b"3")])
    assert one != build.hash_inputs([("a", b"1"), ("c", b"2")])
    assert len(one) == 16


def test_the_key_of_a_manifests_image_covers_the_files_it_copies(tmp_path: Path) -> None:
    base = build.BuiltImage("base", "r", tmp_path / "a", "k1", 0, 0.0, reused=True)
    other = build.BuiltImage("base", "r", tmp_path / "a", "k2", 0, 0.0, reused=True)
    key = build.image_key("controller", base)
    assert key == build.image_key("controller", base)
    assert key != build.image_key("controller", other)
    sources = build.parse_dockerfile(IMAGES / "controller.Dockerfile").copied_sources()
    parts = dict(build.file_parts(build.ROOT, sources))
    assert "webhook/__main__.py" in parts
    assert "manifests/images/controller.requirements.txt" in parts
    assert not [p for p in parts if "__pycache__" in p or p.endswith(".pyc")]


def test_unknown_and_unbuildable_images_are_refused_with_the_choices() -> None:
    with pytest.raises(ImageError, match=r"no manifests/images/nope.Dockerfile; known images"):
        build.ensure_image("nope")
    with pytest.raises(ImageError, match=r"vllm\.Dockerfile does not start FROM the Python image"):
        build.ensure_image("vllm")


def test_model_and_adapter_folders_are_checked_before_building(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a Hugging Face model folder"):
        build.ensure_model_image(tmp_path, root=tmp_path / "cache")
    with pytest.raises(ImageError, match="not a PEFT adapter folder"):
        build.ensure_adapter_image(tmp_path, root=tmp_path / "cache")


def test_the_builder_is_generic_over_the_python_dockerfiles() -> None:
    names = build.buildable()
    assert {"controller", "transformers"} <= set(names)
    for name in names:
        df = build.parse_dockerfile(IMAGES / f"{name}.Dockerfile")
        assert df.args.get("PYTHON_IMAGE"), f"{name}.Dockerfile has no PYTHON_IMAGE build arg"
