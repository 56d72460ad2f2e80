"""The builder's pure parts: input keys, the failing step of a build log, pip's CA bundle,
and the refusals that name what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import build
from tests.images.errors import ImageError
from tests.install.images import parse_dockerfile
from tests.install.manifests import IMAGES, ROOT

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
    sources = parse_dockerfile(IMAGES / "controller.Dockerfile").copied_sources()
    parts = dict(build.file_parts(ROOT, sources))
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
        df = parse_dockerfile(IMAGES / f"{name}.Dockerfile")
        assert df.args.get("PYTHON_IMAGE"), f"{name}.Dockerfile has no PYTHON_IMAGE build arg"


def test_missing_tools_are_named_with_their_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With nothing on PATH (no buildah, no mmdebstrap, no apt-get) the error names each
    command, its Debian package, and what to do."""
    from tests.images import prereqs
    from tests.images.errors import PrerequisiteError

    monkeypatch.setenv("PATH", str(tmp_path))
    assert prereqs.missing() == {"buildah": "buildah", "mmdebstrap": "mmdebstrap"}
    with pytest.raises(PrerequisiteError) as caught:
        prereqs.ensure()
    message = str(caught.value)
    assert "buildah (Debian package buildah)" in message
    assert "mmdebstrap (Debian package mmdebstrap)" in message
    assert "there is no apt-get here" in message


@pytest.mark.images
@pytest.mark.slow
def test_a_failing_build_names_the_dockerfile_and_the_step(tmp_path: Path) -> None:
    """A real buildah build whose third step fails: the error names the file and that step."""
    import tempfile

    from tests.images.errors import BuildError

    base = build.ensure_base()
    dockerfile = tmp_path / "broken.Dockerfile"
    dockerfile.write_text(
        "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\nRUN python -c 'print(1)'\n"
        "RUN python -c 'import sys; sys.exit(\"no such package: kaito-missing\")'\nUSER 1000\n"
    )
    work = Path(tempfile.mkdtemp(prefix="run-failing-", dir=build.cache_dir()))
    buildah = build.Buildah(work)
    try:
        buildah.pick_driver()
        with pytest.raises(BuildError) as caught:
            buildah.bud(
                dockerfile,
                tmp_path,
                "localhost/kaito-py/broken:test",
                {"PYTHON_IMAGE": f"oci-archive:{base.archive}"},
                None,
            )
    finally:
        buildah.close()
    message = str(caught.value)
    assert message.startswith(f"building {dockerfile} failed at STEP 3/4: RUN python -c")
    assert "no such package: kaito-missing" in message  # the step's own output follows
    assert not work.exists()


def test_the_vllm_cpu_key_covers_what_the_image_copies_and_nothing_else() -> None:
    """Only the image's real inputs: the lock it installs and the code it copies (the six
    runtime.server modules the /chat front imports, not the transformers runtime); the lock's
    sources (vllm-cpu.in, overrides) and other code leave the key alone."""
    sources = parse_dockerfile(IMAGES / "vllm-cpu.Dockerfile").copied_sources()
    parts = dict(build.file_parts(ROOT, sources))
    assert "manifests/images/vllm-cpu.requirements.txt" in parts
    assert "runtime/vllm/__main__.py" in parts
    assert "runtime/server/schema.py" in parts
    assert "api/data/presets.yaml" in parts
    assert not [p for p in parts if p.startswith(("runtime/server/app", "tests/", "webhook/"))]
    assert "manifests/images/vllm-cpu.in" not in parts
    assert "manifests/images/vllm-cpu.overrides.txt" not in parts


def _oci_archive(path: Path) -> bytes:
    """A one-image OCI archive with one (empty) layer, as buildah writes them."""
    import gzip
    import hashlib
    import io
    import json
    import tarfile

    def sha(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    layer = gzip.compress(b"\0" * 1024)
    config = json.dumps({"config": {"User": "1000:1000"}, "rootfs": {"diff_ids": ["x"]}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": sha(config), "size": len(config)},
            "layers": [{"digest": sha(layer), "size": len(layer)}],
        }
    ).encode()
    index = json.dumps(
        {
            "manifests": [
                {
                    "digest": sha(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": "localhost/rt:1"},
                }
            ]
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            *[(f"blobs/sha256/{sha(d)[7:]}", d) for d in (layer, config, manifest)],
            ("index.json", index),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return layer


def test_a_model_image_is_its_runtime_archive_plus_one_layer(tmp_path: Path) -> None:
    import gzip
    import hashlib
    import io
    import json
    import tarfile

    from tests.images import ociappend

    runtime_layer = _oci_archive(tmp_path / "rt.tar")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{}")
    files = {"workspace/weights/config.json": tmp_path / "w" / "config.json"}
    dirs = {"workspace": (0, 0), "workspace/weights": (1000, 1000)}
    for out in ("a.tar", "b.tar"):
        ociappend.append_layer(
            tmp_path / "rt.tar", tmp_path / out, ref="localhost/m:2", files=files, dirs=dirs,
            created_by="COPY weights/",
        )  # fmt: skip
    with tarfile.open(tmp_path / "a.tar") as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
            assert member is not None
            return member.read()

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (entry,) = index["manifests"]
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == "localhost/m:2"
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        old, new = manifest["layers"]
        assert blob(old["digest"]) == runtime_layer  # the runtime's layer copied as it was
        layer = gzip.decompress(blob(new["digest"]))
        assert config["rootfs"]["diff_ids"] == ["x", "sha256:" + hashlib.sha256(layer).hexdigest()]
        assert config["config"] == {"User": "1000:1000"}
        assert manifest["annotations"]["org.opencontainers.image.base.name"] == "localhost/rt:1"
        with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
            owners = {m.name: (m.uid, m.gid) for m in inner.getmembers()}
    assert owners == {
        "workspace": (0, 0),
        "workspace/weights": (1000, 1000),
        "workspace/weights/config.json": (1000, 1000),
    }
    # Reproducible: the same inputs give the same image.
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
