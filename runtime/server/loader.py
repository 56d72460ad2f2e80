"""Loading the model: tokenizer, weights on the chosen device and dtype, adapters merged in.

``load_model`` runs once at startup, off the event loop; it logs each stage. Offline by default:
``HF_HUB_OFFLINE=1`` and local files only, unless ``--allow-download``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.server.attention import use_grouped_sdpa
from runtime.server.cpus import auto_threads
from runtime.server.errors import ModelLoadError
from runtime.server.planning import ModelLimits
from runtime.server.settings import Settings

log = logging.getLogger(__name__)

FALLBACK_CONTEXT = 2048
SAMPLING_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass
class LoadedModel:
    """Everything the server needs from the loaded model."""

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    limits: ModelLimits
    root: str
    adapters: list[str]


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda: no CUDA device is available; use --device auto")
    return torch.device(choice)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 (or float16) on CUDA, float32 on CPU."""
    if choice == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype: torch.dtype = getattr(torch, choice)
    return dtype


def read_chat_template(value: str) -> str:
    """A chat template given as a file path or inline (anything with Jinja braces)."""
    if "{" in value:
        return value
    path = Path(value)
    if not path.is_file():
        raise ModelLoadError(
            f"--chat-template: {value!r} is neither a file nor an inline Jinja template"
        )
    return path.read_text(encoding="utf-8")


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.append(value)
        elif isinstance(value, list | tuple):
            ids.extend(int(v) for v in value)
    return tuple(dict.fromkeys(ids))


def _context_length(model: Any, tokenizer: Any, settings: Settings) -> int:
    config = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    found = None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            found = value
            break
    if found is None:
        limit = getattr(tokenizer, "model_max_length", None)
        found = limit if isinstance(limit, int) and 0 < limit < 10_000_000 else FALLBACK_CONTEXT
    if settings.max_model_len is not None:
        if settings.max_model_len > found:
            log.warning(
                "--max-model-len %d is larger than the model's %d positions",
                settings.max_model_len,
                found,
            )
        return settings.max_model_len
    return found


def _sampling_defaults(model: Any) -> dict[str, float]:
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    diff = config.to_diff_dict()
    return {k: float(diff[k]) for k in SAMPLING_DEFAULT_KEYS if diff.get(k) is not None}


def merge_adapters(model: Any, settings: Settings) -> list[str]:
    """Merge the ``--adapter`` LoRA adapters into the weights (exactly, at their strengths).

    ``W' = W + sum_i s_i * scaling_i * B_i @ A_i`` (``runtime.adapters.merge_into``); an adapter
    that does not fit the model stops the start-up with a message naming it.
    """
    if not settings.adapter:
        return []
    from runtime.adapters import (  # noqa: PLC0415 (loads torch/safetensors helpers)
        AdapterError,
        adapters_from_args,
        load_adapters,
        merge_into,
    )

    try:
        specs = adapters_from_args(settings.adapter, settings.adapter_root)
        log.info(
            "merging adapters: %s",
            ", ".join(f"{s.name} at strength {s.strength:g} ({s.path})" for s in specs),
        )
        report = merge_into(model, load_adapters(specs), base_name=settings.model)
    except AdapterError as exc:
        raise ModelLoadError(str(exc)) from exc
    for warning in report.warnings:
        log.warning("adapter: %s", warning)
    return [
        f"{a.name} at strength {a.strength:g}: {a.modules} modules, rank "
        f"{'/'.join(str(r) for r in sorted(set(a.ranks)))}"
        for a in report.adapters
    ]


def load_model(settings: Settings) -> LoadedModel:
    """Load tokenizer and model as the settings say, merge adapters, compute the limits."""
    log.info("loading the model: importing transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 (slow import)

    started = time.monotonic()
    if not settings.allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if settings.threads:
        threads, why = settings.threads, "--threads"
    else:
        threads, cpus = auto_threads()
        why = f"{cpus} usable CPU(s); --threads sets fewer"
    torch.set_num_threads(threads)
    log.info("torch CPU threads: %d (%s)", threads, why)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    common: dict[str, Any] = {
        "revision": settings.revision,
        "trust_remote_code": settings.trust_remote_code,
        "local_files_only": not settings.allow_download,
    }
    log.info("loading tokenizer from %s", settings.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.model, **common)
    except (OSError, ValueError) as exc:
        hint = "" if settings.allow_download else " (offline: pass --allow-download to fetch it)"
        raise ModelLoadError(
            f"--model {settings.model}: cannot load the tokenizer{hint}: {exc}"
        ) from exc
    if settings.chat_template:
        tokenizer.chat_template = read_chat_template(settings.chat_template)
    log.info(
        "loading weights from %s as %s on %s",
        settings.model,
        str(dtype).removeprefix("torch."),
        device,
    )
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    placement: dict[str, Any] = {"device_map": "auto"} if gpus > 1 else {}
    if placement:
        log.info("splitting the layers over %d GPUs (device_map=auto)", gpus)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            settings.model, dtype=dtype, **placement, **common
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"--model {settings.model}: cannot load the weights: {exc}") from exc
    if not placement:
        model.to(device)
    model.eval()
    device = model.get_input_embeddings().weight.device  # where inputs go (the first GPU)
    params = sum(p.numel() for p in model.parameters())
    log.info(
        "weights loaded: %s, %.1fM parameters (%.1f s)",
        type(model).__name__,
        params / 1e6,
        time.monotonic() - started,
    )
    adapters = merge_adapters(model, settings)
    for line in adapters:
        log.info("adapter merged: %s", line)
    use_grouped_sdpa(model, device)

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos[0] if eos else 0
    output = model.get_output_embeddings()
    vocab = int(output.weight.shape[0]) if output is not None else int(model.config.vocab_size)
    limits = ModelLimits(
        vocab_size=vocab,
        context_length=_context_length(model, tokenizer, settings),
        eos_token_ids=eos,
        pad_token_id=int(pad),
        max_n=settings.max_n,
        sampling_defaults=_sampling_defaults(model),
    )
    log.info(
        "model ready in %.1f s: context %d tokens, vocabulary %d, eos %s",
        time.monotonic() - started,
        limits.context_length,
        limits.vocab_size,
        list(eos),
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        limits=limits,
        root=settings.model,
        adapters=adapters,
    )
