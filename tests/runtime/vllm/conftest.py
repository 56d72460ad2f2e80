"""Fixtures for the vLLM launcher tests (the adapter fixtures are shared with the library's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.runtime.adapters.conftest import (  # noqa: F401 (pytest fixtures)
    adapter_root,
    make_adapter,
    tiny_gpt2,
    tiny_llama,
)
from tests.support.tiny_model import CHAT_TEMPLATE, TEST_SPEC, build_tiny_llama


def tiny_preset(model_dir: Path, **changes: object) -> dict[str, object]:
    """The tiny Llama described as a preset (what --preset-file takes)."""
    config = json.loads((model_dir / "config.json").read_text())
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        parameters = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())  # noqa: SIM118
    preset: dict[str, object] = {
        "name": "tiny-llama",
        "hf_repo": "kaito-test/tiny-llama",
        "revision": "0" * 40,
        "dtype": "bfloat16",
        "context_length": TEST_SPEC.max_position_embeddings,
        "weight_bytes": parameters * 2,
        "parameters": parameters,
        "num_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "num_kv_heads": config.get("num_key_value_heads", 1),  # Falcon: given in changes
        "head_dim": config["hidden_size"] // config["num_attention_heads"],
        "distributed": False,
        "vllm_lora": True,
        "trust_remote_code": False,
        "chat_template": CHAT_TEMPLATE,
    }
    return {**preset, **changes}


@pytest.fixture
def tiny_preset_file(tmp_path: Path) -> Path:
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(tiny_preset(build_tiny_llama())))
    return path
