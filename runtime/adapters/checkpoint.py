"""Merging adapters into a copy of a safetensors checkpoint on disk, one tensor at a time.

For servers that cannot apply LoRA to an architecture (vLLM and Falcon): the merged folder is a
complete model (config, tokenizer, index, shards) whose targeted weights are
``W + Σ s_i · scaling_i · B_i @ A_i``, computed in float32 and cast back to the stored dtype once
(the same arithmetic, in the same order, as ``merge_into``, so the results are bit-identical).

Streaming: a safetensors file is an 8-byte header length, a JSON header (dtype, shape and byte
range of every tensor) and the raw tensor bytes. A merged weight keeps its dtype and shape, so the
output file has the same header and the same byte ranges: each shard is copied range by range
(in the kernel where it can), and only the targeted weights are read, merged and written in their
place. Memory holds one weight at a time (its stored bytes, a float32 sum and one delta), never a
shard or the model; untouched tensors, the header and its metadata stay byte-for-byte identical.

Every check (shard list, dtypes, the adapters against the checkpoint's shapes) runs on headers
before anything is written. The output appears atomically: everything is written in a temporary
sibling folder, a marker file (``kaito_merge.json``: the base's identity and each adapter's name,
strength and content digest) is written last, and the folder is renamed into place. The same
inputs find the marker and reuse the folder; any change merges again.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.adapters.errors import CheckpointError, IncompatibleAdapterError
from runtime.adapters.lora import LoraAdapter
from runtime.adapters.merge import AdapterSummary, BaseWeight, check_compatible, summarize
from runtime.adapters.spec import CONFIG_FILE, WEIGHT_FILES

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MARKER_FILE = "kaito_merge.json"
"""Written last in a merged folder: what it was merged from (its presence means complete)."""
MARKER_FORMAT = 1

WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".gguf",
    ".onnx",
    ".npz",
)
"""Files that hold weights: never copied as "other files" (only the chosen shards are)."""

_FLOAT_DTYPES: Mapping[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in a safetensors file, from its header."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Absolute byte offset of the data in the file."""
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ShardHeader:
    """A safetensors file's tensors (by key) as its header describes them."""

    path: Path
    size: int
    header_sha256: str
    tensors: Mapping[str, TensorEntry]


@dataclass(frozen=True)
class MergedCheckpoint:
    """A merged model folder, as written (or found and reused) by ``merge_checkpoint``."""

    path: Path
    reused: bool
    """True when a folder merged from the same inputs was already there (nothing written)."""
    base_id: str
    fingerprint: Mapping[str, Any]
    """What the marker records: the base's identity and each adapter's name, strength, digest."""
    shards: tuple[str, ...]
    modules_changed: int
    bytes_written: int
    adapters: tuple[AdapterSummary, ...] = ()
    warnings: tuple[str, ...] = ()


def read_header(path: Path) -> ShardHeader:
    """Parse a safetensors file's header (no tensor data is read)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) != 8:
                raise ValueError("shorter than 8 bytes")
            (length,) = struct.unpack("<Q", raw_len)
            if length > min(size - 8, 100 << 20):
                raise ValueError(f"header length {length} exceeds the file")
            raw = handle.read(length)
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        data_start = 8 + length
        tensors: dict[str, TensorEntry] = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, finish = (int(v) for v in info["data_offsets"])
            entry = TensorEntry(
                key=key,
                dtype=str(info["dtype"]),
                shape=tuple(int(d) for d in info["shape"]),
                start=data_start + begin,
                end=data_start + finish,
            )
            if not data_start <= entry.start <= entry.end <= size:
                raise ValueError(f"tensor {key!r} lies outside the file")
            tensors[key] = entry
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); the model's weights must be "
            "complete safetensors files (re-download or rebuild the model image)"
        ) from None
    return ShardHeader(path, size, hashlib.sha256(raw).hexdigest(), tensors)


def _has_weight_suffix(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def checkpoint_shards(model_dir: Path) -> list[Path]:
    """The safetensors files that make up the model in ``model_dir``, in order.

    The shards the index (``model.safetensors.index.json``) names when there is one, else
    ``model.safetensors``, else every ``*.safetensors`` file. Raises ``CheckpointError`` when
    the folder has no safetensors weights (``.bin``-only checkpoints are refused by name).
    """
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted({str(v) for v in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{index} cannot be read ({exc}); it must be the index save_pretrained writes"
            ) from None
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{index} names shards that are not in {model_dir}: {', '.join(missing)}; "
                "the model folder is incomplete (re-download it or rebuild the model image)"
            )
        return [model_dir / n for n in names]
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    found = sorted(model_dir.glob("*.safetensors"))
    if found:
        return found
    others = sorted(
        p.name for p in model_dir.iterdir() if p.is_file() and _has_weight_suffix(p.name)
    )
    if others:
        raise CheckpointError(
            f"{model_dir} holds only {', '.join(others[:3])}"
            f"{' and more' if len(others) > 3 else ''}: PyTorch pickle (.bin) or other "
            "non-safetensors weights, which merging does not read; convert the model to "
            "safetensors (save_pretrained(..., safe_serialization=True)) or serve it with the "
            "transformers runtime (annotation kaito.sh/runtime: transformers)"
        )
    raise CheckpointError(
        f"{model_dir} holds no model weights (no *.safetensors files); point to the folder "
        "with the model's config.json and safetensors shards"
    )


def checkpoint_headers(model_dir: Path) -> list[ShardHeader]:
    """``read_header`` of every shard, in ``checkpoint_shards`` order."""
    return [read_header(p) for p in checkpoint_shards(model_dir)]


def _weights_of(headers: Sequence[ShardHeader]) -> dict[str, tuple[ShardHeader, TensorEntry]]:
    """2-D ``<module>.weight`` tensors by module name."""
    out: dict[str, tuple[ShardHeader, TensorEntry]] = {}
    for header in headers:
        for key, entry in header.tensors.items():
            if key.endswith(".weight") and len(entry.shape) == 2:
                out[key.removesuffix(".weight")] = (header, entry)
    return out


def _resolve_modules(
    adapters: Sequence[LoraAdapter], weights: Mapping[str, tuple[ShardHeader, TensorEntry]]
) -> dict[str, tuple[ShardHeader, TensorEntry]]:
    """Each targeted module's tensor. A checkpoint saved from the bare base model (GPT-2's hub
    files: ``h.0.attn.c_attn.weight``) lacks the head model's prefix (``transformer.``), which
    PEFT's module names carry: such names are matched without their first component."""
    found: dict[str, tuple[ShardHeader, TensorEntry]] = {}
    for adapter in adapters:
        for name in adapter.modules:
            if name in weights:
                found[name] = weights[name]
            elif "." in name and (tail := name.split(".", 1)[1]) in weights:
                found[name] = weights[tail]
    return found


def _digest_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def adapter_digest(adapter: LoraAdapter) -> str:
    """sha256 over the adapter's config and weight files (what its image copied)."""
    files = [adapter.path / CONFIG_FILE, *(adapter.path / f for f in WEIGHT_FILES)]
    return _digest_files([f for f in files if f.is_file()])


def _other_files(model_dir: Path, keep: Sequence[str]) -> Iterator[Path]:
    """Every non-weight file under ``model_dir`` (relative paths), hidden entries skipped;
    ``keep`` names weight-related files to copy anyway (the safetensors index)."""
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(model_dir)
            if name.startswith("."):
                continue
            if str(rel) in keep:
                yield rel
                continue
            if _has_weight_suffix(name) or (
                name.endswith(".index.json") and _has_weight_suffix(name[: -len(".index.json")])
            ):
                continue
            yield rel


def _kept_files(model_dir: Path) -> list[str]:
    return [INDEX_FILE] if (model_dir / INDEX_FILE).is_file() else []


def checkpoint_id(model_dir: Path) -> str:
    """A content identity for a local checkpoint: each shard's name, size and header hash, and a
    hash of every other file (config, tokenizer...). Reads headers, not the weights."""
    headers = checkpoint_headers(model_dir)
    others = list(_other_files(model_dir, _kept_files(model_dir)))
    blob = json.dumps(
        {
            "shards": [[h.path.name, h.size, h.header_sha256] for h in headers],
            "files": _digest_files([model_dir / p for p in others]),
            "names": [str(p) for p in others],
        },
        sort_keys=True,
    )
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def merge_fingerprint(adapters: Sequence[LoraAdapter], base_id: str) -> dict[str, Any]:
    """What a merged folder is made of: the base's identity and every adapter's name, strength
    and content digest, in order. Equal fingerprints mean equal merged weights."""
    return {
        "format": MARKER_FORMAT,
        "base": base_id,
        "adapters": [
            {"name": a.name, "strength": a.strength, "sha256": adapter_digest(a)} for a in adapters
        ],
    }


def merged_name(fingerprint: Mapping[str, Any]) -> str:
    """A short folder name for a fingerprint (the same on every node of a StatefulSet)."""
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_merged(out_dir: Path, fingerprint: Mapping[str, Any]) -> MergedCheckpoint | None:
    """The merged folder at ``out_dir`` if its marker records ``fingerprint`` and its shards are
    all there with their recorded sizes; else None."""
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text(encoding="utf-8"))
        if marker.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            return None
        shards = marker["shards"]
        for shard in shards:
            if (out_dir / shard["name"]).stat().st_size != shard["size"]:
                return None
        return MergedCheckpoint(
            path=out_dir,
            reused=True,
            base_id=str(fingerprint["base"]),
            fingerprint=fingerprint,
            shards=tuple(str(s["name"]) for s in shards),
            modules_changed=int(marker["modules_changed"]),
            bytes_written=0,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _copy_range(
    src: io.BufferedReader, dst: io.BufferedWriter, start: int, end: int, *, kernel: bool = True
) -> None:
    """Copy ``src[start:end]`` to ``dst``'s current position: with ``copy_file_range`` (in the
    kernel, no user-space buffer) where the filesystems allow, else in 1 MiB chunks."""
    dst.flush()
    remaining = end - start
    offset = start
    try:
        while kernel and remaining > 0:
            done = os.copy_file_range(src.fileno(), dst.fileno(), remaining, offset)
            if done == 0:
                break
            offset += done
            remaining -= done
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    # copy_file_range moved the descriptor's position; realign the Python file object.
    dst.seek(0, os.SEEK_END)
    src.seek(offset)
    while remaining > 0:
        chunk = src.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            raise OSError(errno.EIO, f"unexpected end of {src.name}")
        dst.write(chunk)
        remaining -= len(chunk)


def _read_weight(src: io.BufferedReader, entry: TensorEntry) -> torch.Tensor:
    buffer = bytearray(entry.nbytes)
    src.seek(entry.start)
    if src.readinto(buffer) != entry.nbytes:
        raise OSError(errno.EIO, f"unexpected end of {src.name} in tensor {entry.key!r}")
    return torch.frombuffer(buffer, dtype=_FLOAT_DTYPES[entry.dtype]).reshape(entry.shape)


def _merge_weight(weight: torch.Tensor, module: str, users: Sequence[LoraAdapter]) -> torch.Tensor:
    """``merge_into``'s arithmetic: float32 sum in adapter order, one cast back."""
    total = weight.to(torch.float32)
    for adapter in users:
        total = total + adapter.modules[module].delta(adapter.strength, device="cpu")
    return total.to(weight.dtype).contiguous()


def _merge_shard(
    header: ShardHeader,
    targets: Sequence[tuple[TensorEntry, str, Sequence[LoraAdapter]]],
    dst_path: Path,
) -> None:
    """Copy one shard to ``dst_path`` with each target's weight replaced by its merged value."""
    with open(header.path, "rb") as src, open(dst_path, "wb") as dst:
        position = 0
        for entry, module, users in sorted(targets, key=lambda t: t[0].start):
            _copy_range(src, dst, position, entry.start)
            merged = _merge_weight(_read_weight(src, entry), module, users)
            dst.write(merged.view(torch.uint8).reshape(-1).numpy().data)
            position = entry.end
        _copy_range(src, dst, position, header.size)
        dst.flush()
        os.fsync(dst.fileno())


def _remove_stale_temps(out_dir: Path) -> None:
    for stale in out_dir.parent.glob(f".{out_dir.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def merge_checkpoint(
    model_dir: Path,
    adapters: Sequence[LoraAdapter],
    out_dir: Path,
    *,
    base_name: str | None = None,
    strict_base_name: bool = False,
    base_id: str | None = None,
) -> MergedCheckpoint:
    """Write ``model_dir`` merged with ``adapters`` at their strengths to ``out_dir``.

    ``base_name`` is the base's hub id for ``check_compatible``'s name check; ``base_id`` its
    content identity for the marker (default ``checkpoint_id(model_dir)``; a launcher passes
    ``hf:<repo>@<commit>`` to decide reuse before downloading). When ``out_dir`` already holds
    a merge of the same inputs it is returned as is (``reused``); a folder from other inputs is
    replaced. Raises ``AdapterError`` subclasses before writing anything when an adapter does not
    fit or the checkpoint cannot be merged (not safetensors, a quantised target).
    """
    names = [a.name for a in adapters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IncompatibleAdapterError(
            f"adapter {duplicates[0]!r} is given more than once; merge each adapter once",
            adapter=duplicates[0],
        )
    headers = checkpoint_headers(model_dir)
    weights = _weights_of(headers)
    resolved = _resolve_modules(adapters, weights)
    base = {name: BaseWeight(shape=entry.shape) for name, (_, entry) in resolved.items()}
    base.update({name: BaseWeight(shape=entry.shape) for name, (_, entry) in weights.items()})
    warnings = check_compatible(
        adapters, base, base_name=base_name, strict_base_name=strict_base_name
    )
    active = [a for a in adapters if a.strength != 0.0]
    by_module: dict[str, list[LoraAdapter]] = {}
    for adapter in active:
        for module in adapter.modules:
            by_module.setdefault(module, []).append(adapter)
    plan: dict[Path, list[tuple[TensorEntry, str, Sequence[LoraAdapter]]]] = {}
    for module, users in by_module.items():
        header, entry = resolved[module]
        if entry.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"adapter {users[0].name!r} targets {entry.key!r} in {header.path.name}, stored "
                f"as {entry.dtype} (quantised); merge into an unquantised (float16, bfloat16 or "
                "float32) checkpoint"
            )
        if entry.nbytes != math.prod(entry.shape) * _FLOAT_DTYPES[entry.dtype].itemsize:
            raise CheckpointError(
                f"{header.path}: tensor {entry.key!r} has {entry.nbytes} bytes for shape "
                f"{entry.shape} in {entry.dtype}; the file is corrupt"
            )
        plan.setdefault(header.path, []).append((entry, module, users))
    base_id = base_id or checkpoint_id(model_dir)
    fingerprint = merge_fingerprint(adapters, base_id)
    found = read_merged(out_dir, fingerprint)
    if found is not None:
        log.info("reusing %s: it holds the same merge (%s)", out_dir, merged_name(fingerprint))
        return MergedCheckpoint(
            path=found.path,
            reused=True,
            base_id=base_id,
            fingerprint=fingerprint,
            shards=found.shards,
            modules_changed=found.modules_changed,
            bytes_written=0,
            adapters=tuple(summarize(a) for a in adapters),
            warnings=tuple(warnings),
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out_dir)
    if out_dir.exists():
        log.info("%s holds another merge; merging again", out_dir)
        shutil.rmtree(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    written = 0
    try:
        for rel in _other_files(model_dir, _kept_files(model_dir)):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / rel, tmp / rel)
        total = len(headers)
        for number, header in enumerate(headers, start=1):
            targets = plan.get(header.path, [])
            _merge_shard(header, targets, tmp / header.path.name)
            written += header.size
            log.info(
                "merged shard %d/%d %s: %d weight(s) changed, %s",
                number,
                total,
                header.path.name,
                len(targets),
                _gib(header.size),
            )
        marker = {
            "fingerprint": fingerprint,
            "shards": [{"name": h.path.name, "size": h.size} for h in headers],
            "modules_changed": len(by_module),
            "source": str(model_dir),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        tmp.rename(out_dir)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the merged model to {out_dir}: {exc}"
            + (
                "; the volume is full: it needs the model's weight bytes free"
                if exc.errno == errno.ENOSPC
                else ""
            )
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "merged %d adapter(s) into %d weight(s) of %s: %s in %s",
        len(active),
        len(by_module),
        model_dir,
        _gib(written),
        out_dir,
    )
    return MergedCheckpoint(
        path=out_dir,
        reused=False,
        base_id=base_id,
        fingerprint=fingerprint,
        shards=tuple(h.path.name for h in headers),
        modules_changed=len(by_module),
        bytes_written=written,
        adapters=tuple(summarize(a) for a in adapters),
        warnings=tuple(warnings),
    )
