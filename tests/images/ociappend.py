"""One more layer on an OCI archive, without a builder: what ``model.Containerfile`` does
(``FROM <runtime image>`` + ``COPY --chown=1000:1000 weights/ /workspace/weights/``).

buildah would unpack the runtime image (3-6 GB) and gzip every layer again when it writes the
archive (about 9 minutes for the transformers image on 2 cores, more for vLLM-CPU). The runtime's
layers do not change, so this copies their blobs as they are, adds one gzip layer with the
files, and writes a new config (one more ``diff_id`` and history entry), manifest and
``index.json`` naming the new image: the same image the Containerfile builds, in seconds.
The layer is reproducible (sorted entries, fixed times and owners, gzip without a timestamp).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.images.errors import ImageError

REF_ANNOTATION = "org.opencontainers.image.ref.name"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 0


def layer_tar(files: Mapping[str, Path], dirs: Mapping[str, tuple[int, int]]) -> bytes:
    """An uncompressed layer: ``dirs`` (path -> uid, gid; mode 0755) and ``files``
    (path in the image, without the leading slash -> source), files owned like their folder."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(dirs):
            info = tarfile.TarInfo(path.rstrip("/") + "/")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.uid, info.gid = dirs[path]
            info.mtime = EPOCH
            tar.addfile(info)
        for path in sorted(files):
            data = files[path].read_bytes()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            parent = path.rsplit("/", 1)[0]
            info.uid, info.gid = dirs.get(parent, (0, 0))
            info.mtime = EPOCH
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_name(digest: str) -> str:
    algo, _, hexa = digest.partition(":")
    return f"blobs/{algo}/{hexa}"


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        where = tar.name.decode() if isinstance(tar.name, bytes) else tar.name
        raise ImageError(f"{where}: no {name} in the OCI archive")
    return member.read()


def new_image(
    config: dict[str, Any],
    manifest: dict[str, Any],
    layer: bytes,
    *,
    created_by: str,
    base_ref: str,
    base_digest: str,
) -> tuple[bytes, bytes, bytes]:
    """(gzip layer, config, manifest) of the image ``config``/``manifest`` plus ``layer``."""
    gz = gzip.compress(layer, compresslevel=6, mtime=0)
    config = json.loads(json.dumps(config))
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(_sha(layer))
    config.setdefault("history", []).append({"created_by": created_by})
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = json.loads(json.dumps(manifest))
    manifest["config"] = {
        "mediaType": CONFIG,
        "digest": _sha(config_bytes),
        "size": len(config_bytes),
    }
    manifest["layers"] = [
        *manifest.get("layers", []),
        {"mediaType": LAYER, "digest": _sha(gz), "size": len(gz)},
    ]
    manifest["annotations"] = {
        "org.opencontainers.image.base.name": base_ref,
        "org.opencontainers.image.base.digest": base_digest,
    }
    return gz, config_bytes, json.dumps(manifest, separators=(",", ":")).encode()


def append_layer(
    source: Path,
    dest: Path,
    *,
    ref: str,
    files: Mapping[str, Path],
    dirs: Mapping[str, tuple[int, int]],
    created_by: str,
) -> None:
    """Write ``dest``: the single image of the OCI archive ``source`` plus one layer, named
    ``ref``."""
    with tarfile.open(source) as src:
        index = json.loads(_read(src, "index.json"))
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            raise ImageError(f"{source}: expected one image in the archive, found {len(manifests)}")
        base = manifests[0]
        manifest = json.loads(_read(src, _blob_name(base["digest"])))
        config = json.loads(_read(src, _blob_name(manifest["config"]["digest"])))
        base_ref = base.get("annotations", {}).get(REF_ANNOTATION, "")
        gz, config_bytes, manifest_bytes = new_image(
            config,
            manifest,
            layer_tar(files, dirs),
            created_by=created_by,
            base_ref=base_ref,
            base_digest=base["digest"],
        )
        new_index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": _sha(manifest_bytes),
                    "size": len(manifest_bytes),
                    "annotations": {REF_ANNOTATION: ref},
                }
            ],
        }
        written: set[str] = set()
        with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
            for member in src:
                if member.name == "index.json":
                    continue
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
                written.add(member.name)
            for data in (gz, config_bytes, manifest_bytes):
                name = _blob_name(_sha(data))
                if name in written:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                out.addfile(info, io.BytesIO(data))
            index_bytes = json.dumps(new_index, separators=(",", ":")).encode()
            info = tarfile.TarInfo("index.json")
            info.size = len(index_bytes)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(index_bytes))
