"""Fixtures for the adapter library: the tiny Llama, a tiny GPT-2 and real PEFT adapters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.tiny_adapters import build_tiny_gpt2, make_lora_adapter
from tests.support.tiny_model import build_tiny_llama

MakeAdapter = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    return build_tiny_llama()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared /mnt/adapter stand-in; adapters are made once per session, by name."""
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def make_adapter(adapter_root: Path, tiny_llama: Path) -> MakeAdapter:
    """``make_adapter(name, base=None, **LoraConfig options)``: a saved PEFT adapter, cached."""
    made: dict[str, str] = {}

    def make(name: str, base: Path | None = None, **options: Any) -> Path:
        key = json.dumps({"base": str(base), **options}, sort_keys=True, default=str)
        if name in made:
            assert made[name] == key, f"adapter {name} already made with other options"
            return adapter_root / name
        made[name] = key
        return make_lora_adapter(base or tiny_llama, adapter_root / name, **options)

    return make


def varied_adapters(make_adapter: MakeAdapter, *names: str) -> dict[str, Path]:
    """The adapters the tests combine, by name (made once per session):

    - ``plain``: r 4, alpha 8 on the default targets;
    - ``rs``: rsLoRA, r 8, alpha 16 on q/k/o projections;
    - ``pattern``: r 2, alpha 4 with a rank_pattern and an alpha_pattern;
    - ``off``: r 4 on up_proj only (tests give it strength 0).
    """
    options: dict[str, dict[str, Any]] = {
        "plain": {"r": 4, "lora_alpha": 8, "seed": 1},
        "rs": {
            "r": 8,
            "lora_alpha": 16,
            "use_rslora": True,
            "target_modules": ["q_proj", "k_proj", "o_proj"],
            "seed": 2,
        },
        "pattern": {
            "r": 2,
            "lora_alpha": 4,
            "target_modules": ["q_proj", "v_proj", "gate_proj", "down_proj"],
            "rank_pattern": {"layers.1.self_attn.q_proj": 6},
            "alpha_pattern": {"v_proj": 3},
            "seed": 3,
        },
        "off": {"r": 4, "lora_alpha": 4, "target_modules": ["up_proj"], "seed": 7},
    }
    return {name: make_adapter(name, **options[name]) for name in names}
