"""Merge mode: vLLM serves a copy of the weights with the adapters merged at their strengths.

For presets whose architecture vLLM cannot apply LoRA to (Falcon), and whenever
``--adapter-mode merge`` asks for it. Steps, all before vLLM starts:

1. The base checkpoint: ``--model-dir``, or the preset's Hugging Face repository at its pinned
   revision (``huggingface_hub.snapshot_download`` into the HF cache, safetensors, JSON and
   tokenizer files only; the cache is tried offline first).
2. ``runtime.adapters.merge_checkpoint`` writes ``<merge root>/<hash>`` (default
   ``<adapter-root>/.merged/<hash>``, on the adapters' EmptyDir), where the hash names the inputs
   (the base's identity and each adapter's name, strength and content digest). The same inputs
   on a restarted container find the folder and reuse it (with a pinned hub revision, without
   downloading anything); other folders under the merge root are removed first.
3. Free space is checked before anything is downloaded or written: the merged copy needs the
   checkpoint's bytes on the merge root's volume, a download the same on the HF cache's (both
   when they share a filesystem).

Every node of a multi-node StatefulSet merges into the same path (the hash depends on content
only), since vLLM's Ray workers load the weights from their own disk.

``check_disk`` is pure; the rest is the I/O shell around it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download

from runtime.adapters import (
    AdapterSpec,
    CheckpointError,
    LoraAdapter,
    check_compatible,
    check_same_layout,
    checkpoint_id,
    checkpoint_shards,
    checkpoint_weights,
    load_adapters,
    merge_checkpoint,
    merge_fingerprint,
    merged_name,
    read_merged,
)
from runtime.vllm.errors import DiskSpaceError, DownloadError
from runtime.vllm.inputs import GIB, MIB, PresetLike

log = logging.getLogger("runtime.vllm")

ALLOW_PATTERNS = (
    "*.safetensors",
    "*.json",
    "*.jinja",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.py",
    "tokenizer*",
)
"""What a merge needs from the hub: weights as safetensors, configs, tokenizer files, and the
model's code (for presets with trust_remote_code)."""
IGNORE_PATTERNS = ("consolidated*", "original/*")
"""Mistral's and Llama's second copies of the weights in another layout."""
SLACK_BYTES = 64 * MIB
"""Kept free beyond the bytes a download or a merge needs."""

_COMMIT = re.compile(r"^[0-9a-f]{40}$")

Downloader = Callable[..., Any]
"""``huggingface_hub.snapshot_download``'s signature (tests pass their own)."""


@dataclass(frozen=True)
class DiskNeed:
    """Bytes to be written under ``path``, on the filesystem ``device`` with ``free`` bytes."""

    path: Path
    device: int
    free: int
    need: int
    what: str


def check_disk(needs: Sequence[DiskNeed], slack: int = SLACK_BYTES) -> None:
    """Raise ``DiskSpaceError`` when the needs on one filesystem exceed its free space. Pure."""
    for device in dict.fromkeys(n.device for n in needs):
        group = [n for n in needs if n.device == device]
        total = sum(n.need for n in group)
        free = group[0].free
        if total + slack > free:
            parts = " + ".join(f"{n.what} {n.need / GIB:.2f} GiB ({n.path})" for n in group)
            raise DiskSpaceError(
                f"not enough disk for merge mode: {parts} need {total / GIB:.2f} GiB but the "
                f"volume of {group[0].path} has {free / GIB:.2f} GiB free; give the node more "
                "ephemeral storage (the adapters' EmptyDir holds the merged copy), pass "
                "--merge-root on a larger volume, or serve with --adapter-mode lora where the "
                "preset supports it"
            )


def disk_need(path: Path, need: int, what: str) -> DiskNeed:
    """``need`` bytes to be written under ``path`` (which may not exist yet)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return DiskNeed(path, os.stat(probe).st_dev, usage.free, need, what)


@dataclass(frozen=True)
class MergedModel:
    """What merge mode serves: ``path`` (None: the base as is, all strengths being 0)."""

    path: Path | None
    merged: tuple[tuple[str, float], ...]
    """(adapter, strength) of every adapter merged (strength ≠ 0), in order."""
    reused: bool
    notes: tuple[str, ...]


def hub_base_id(preset: PresetLike) -> str | None:
    """``hf:<repo>@<commit>`` when the preset pins a commit (content-addressed), else None."""
    if _COMMIT.match(preset.revision):
        return f"hf:{preset.hf_repo}@{preset.revision}"
    return None


def _prune(merge_root: Path, keep: str | None) -> None:
    """Remove older merges (other inputs) and interrupted ones: the volume holds one model."""
    if not merge_root.is_dir():
        return
    for entry in merge_root.iterdir():
        if entry.name == keep:
            continue
        log.info("removing %s (a merge of other inputs)", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _checkpoint_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint_shards(model_dir))


def fetch_base(preset: PresetLike, merge_root: Path, download: Downloader) -> Path:
    """The preset's hub snapshot: from the HF cache if complete there, else downloaded after a
    disk check (the download and the merged copy, each about the preset's weight bytes)."""
    kwargs = {
        "repo_id": preset.hf_repo,
        "revision": preset.revision,
        "allow_patterns": list(ALLOW_PATTERNS),
        "ignore_patterns": list(IGNORE_PATTERNS),
    }
    where = f"{preset.hf_repo} at revision {preset.revision}"
    try:
        return Path(download(**kwargs, local_files_only=True))
    except OSError:
        pass  # not (completely) in the cache
    cache = Path(hf_constants.HF_HUB_CACHE)
    check_disk(
        [
            disk_need(cache, preset.weight_bytes, f"downloading {preset.hf_repo}"),
            disk_need(merge_root, preset.weight_bytes, "the merged copy"),
        ]
    )
    log.info("downloading %s into %s", where, cache)
    try:
        return Path(download(**kwargs))
    except OSError as exc:
        raise DownloadError(
            f"cannot download {where} for merging the adapters: {exc}; check the Pod's access "
            "to huggingface.co (and HF_TOKEN for gated models), or pass --model-dir with the "
            "weights"
        ) from None


def _merged_dir(merge_root: Path, active: Sequence[LoraAdapter], base_id: str) -> Path:
    return merge_root / merged_name(merge_fingerprint(active, base_id))


def prepare_merged(
    specs: Sequence[AdapterSpec],
    *,
    preset: PresetLike,
    model_dir: Path | None,
    merge_root: Path,
    strict_base_name: bool = False,
    download: Downloader = snapshot_download,
) -> MergedModel:
    """Load and check the adapters and write (or find) the merged weights; see the module doc."""
    adapters = load_adapters(specs)
    active = [a for a in adapters if a.strength != 0.0]
    if not active:
        notes = ["every adapter has strength 0: the base model is served as is (nothing merged)"]
        if model_dir is not None:
            notes += check_compatible(
                adapters,
                checkpoint_weights(model_dir),
                base_name=preset.hf_repo,
                strict_base_name=strict_base_name,
            )
        else:
            check_same_layout(adapters)
            notes.append(
                "adapters were not checked against the base model's shapes (its weights are "
                "not in a local folder)"
            )
        return MergedModel(None, (), False, tuple(notes))
    merged = tuple((a.name, a.strength) for a in active)
    if model_dir is None:
        base_id = hub_base_id(preset)
        if base_id is not None:
            out = _merged_dir(merge_root, active, base_id)
            if read_merged(out, merge_fingerprint(active, base_id)) is not None:
                log.info("reusing %s: merged from the same inputs, nothing to download", out)
                return MergedModel(out, merged, True, ())
        _prune(merge_root, keep=None)  # room for the download and the merge
        base_dir = fetch_base(preset, merge_root, download)
        try:
            checkpoint_shards(base_dir)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the preset's repository {preset.hf_repo} at revision {preset.revision} has no "
                f"usable safetensors weights ({exc}); merge mode reads safetensors only: serve "
                "it with the transformers runtime, or pass --model-dir with safetensors weights"
            ) from None
        base_id = base_id or checkpoint_id(base_dir)
    else:
        base_dir = model_dir
        base_id = checkpoint_id(model_dir)
    out = _merged_dir(merge_root, active, base_id)
    if read_merged(out, merge_fingerprint(active, base_id)) is None:
        _prune(merge_root, keep=None)
        check_disk([disk_need(merge_root, _checkpoint_bytes(base_dir), "the merged copy")])
    result = merge_checkpoint(
        base_dir,
        active,
        out,
        base_name=preset.hf_repo,
        strict_base_name=strict_base_name,
        base_id=base_id,
    )
    return MergedModel(result.path, merged, result.reused, result.warnings)
