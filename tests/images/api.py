"""What tests call: build or reuse the images, from the tiny test models and adapters.

* ``ensure_image(name)``: ``manifests/images/<name>.Dockerfile`` ("controller",
  "transformers", "vllm-cpu"), built unchanged on the test base image.
* ``ensure_model_image(spec="test", runtime="transformers")``: a private preset image of the
  tiny Llama of ``tests.support.tiny_model`` (weights at ``/workspace/weights``).
* ``ensure_adapter_image(spec="test", seed=0, name="adapter", **lora)``: an adapter image with a
  tiny PEFT LoRA adapter for that model under ``/data``; ``lora`` goes to
  ``tests.support.tiny_adapters.make_lora_adapter`` (e.g. ``r``, ``target_modules``).

Every function returns a ``BuiltImage`` (``ref``: the image name Pods use, never ``latest``;
``archive``: the OCI archive for ``ctr -n k8s.io images import``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.images import build
from tests.images.build import BuiltImage
from tests.support.tiny_model import (
    MEDIUM_SPEC,
    TEST_SPEC,
    VLLM_SPEC,
    TinyLlamaSpec,
    build_tiny_llama,
)

SPECS: dict[str, TinyLlamaSpec] = {"test": TEST_SPEC, "medium": MEDIUM_SPEC, "vllm": VLLM_SPEC}


def ensure_image(name: str) -> BuiltImage:
    return build.ensure_image(name)


def ensure_model_image(
    spec: str | TinyLlamaSpec = "test", runtime: str = "transformers"
) -> BuiltImage:
    shape = SPECS[spec] if isinstance(spec, str) else spec
    weights = build_tiny_llama(shape)
    suffix = "" if runtime == "transformers" else f"-{runtime}"
    return build.ensure_model_image(weights, name=f"model{suffix}", runtime=runtime)


def tiny_adapter(spec: TinyLlamaSpec, seed: int, lora: dict[str, Any]) -> Path:
    """A PEFT LoRA adapter for the tiny model, made once per arguments and cached beside it."""
    from tests.support.tiny_adapters import make_lora_adapter

    base = build_tiny_llama(spec)
    digest = hashlib.sha256(
        json.dumps({"base": base.name, "seed": seed, **lora}, sort_keys=True).encode()
    ).hexdigest()[:12]
    out = base.parent / "adapters" / f"{base.name}-lora-{digest}"
    if not (out / "adapter_config.json").is_file():
        tmp = out.with_name(out.name + ".tmp")
        make_lora_adapter(base, tmp, seed=seed, **lora)
        tmp.rename(out)
    return out


def ensure_adapter_image(
    spec: str | TinyLlamaSpec = "test", seed: int = 0, name: str = "adapter", **lora: Any
) -> BuiltImage:
    shape = SPECS[spec] if isinstance(spec, str) else spec
    return build.ensure_adapter_image(tiny_adapter(shape, seed, lora), name=name)
