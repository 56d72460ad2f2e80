"""Loading PEFT adapters, and refusing the ones that are not a plain low-rank delta."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.adapters import (
    AdapterConfigError,
    AdapterSpec,
    UnsupportedAdapterError,
    load_adapter,
    lora_scaling,
)
from tests.runtime.adapters.conftest import MakeAdapter


def _load(path: Path, name: str | None = None) -> Any:
    return load_adapter(AdapterSpec(name or path.name, path, 1.0))


def test_loads_modules_in_base_model_names(make_adapter: MakeAdapter) -> None:
    adapter = _load(make_adapter("one", r=4, lora_alpha=8, seed=1))
    assert sorted(adapter.modules) == [
        f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")
    ]
    q = adapter.modules["model.layers.0.self_attn.q_proj"]
    assert (q.rank, q.in_features, q.out_features, q.scaling) == (4, 64, 64, 2.0)
    assert adapter.modules["model.layers.0.self_attn.v_proj"].weight_shape == (32, 64)
    assert adapter.max_rank == 4
    assert adapter.with_strength(0.3).strength == 0.3


def test_rslora_scaling() -> None:
    assert lora_scaling(16, 8, use_rslora=True) == 2.0
    assert lora_scaling(16, 8, use_rslora=False) == 0.5


def test_bin_weights_load_like_safetensors(make_adapter: MakeAdapter, tmp_path: Path) -> None:
    source = make_adapter("one", r=4, lora_alpha=8, seed=1)
    target = tmp_path / "bin"
    target.mkdir()
    shutil.copy(source / "adapter_config.json", target)
    from safetensors.torch import load_file

    torch.save(load_file(source / "adapter_model.safetensors"), target / "adapter_model.bin")
    a, b = _load(source), _load(target)
    for name, module in a.modules.items():
        assert torch.equal(module.delta(), b.modules[name].delta())


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"use_dora": True}, "DoRA"),
        (
            {"modules_to_save": ["lm_head"]},
            r"modules_to_save replaces whole modules \(\['lm_head'\]\)",
        ),
        ({"target_modules": ["embed_tokens", "q_proj"]}, "targets the embedding"),
        ({"bias": "all"}, "bias='all' trains the base model's biases"),
        (
            {"target_modules": ["q_proj", "lm_head"], "save_embedding_layers": True},
            r"holds tensor 'base_model.model.lm_head.base_layer.weight'",
        ),
    ],
    ids=["dora", "modules_to_save", "embedding", "bias", "saved_lm_head"],
)
def test_unsupported_adapters_are_refused(
    make_adapter: MakeAdapter, options: dict[str, Any], needle: str
) -> None:
    name = "unsupported-" + "-".join(sorted(options)).replace("_", "-")
    path = make_adapter(name, r=2, lora_alpha=2, seed=9, **options)
    with pytest.raises(UnsupportedAdapterError, match=needle) as err:
        _load(path, name)
    assert f"adapter {name!r}" in str(err.value)


def test_embedding_tensors_are_refused_even_if_config_looks_plain(
    make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    # The config says nothing special: the tensors are the truth.
    source = make_adapter("emb", r=2, lora_alpha=2, seed=9, target_modules=["embed_tokens"])
    copy = tmp_path / "emb"
    shutil.copytree(source, copy)
    config = json.loads((copy / "adapter_config.json").read_text())
    config["modules_to_save"] = None
    (copy / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        UnsupportedAdapterError, match=r"targets the embedding 'model\.embed_tokens'"
    ):
        _load(copy)


def _edited(source: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(source, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    config.update(changes)
    (dest / "adapter_config.json").write_text(json.dumps(config))
    return dest


@pytest.mark.parametrize(
    ("changes", "error", "needle"),
    [
        ({"peft_type": "IA3"}, UnsupportedAdapterError, "peft_type is 'IA3'"),
        ({"init_lora_weights": "pissa"}, UnsupportedAdapterError, "path_initial_model"),
        ({"init_lora_weights": "olora"}, UnsupportedAdapterError, "rewrites the base"),
        ({"r": 8}, AdapterConfigError, r"gives it rank 8 \(r / rank_pattern\)"),
        ({"rank_pattern": {"q_proj": 3}}, AdapterConfigError, "gives it rank 3"),
        ({"lora_alpha": 0}, AdapterConfigError, "lora_alpha=0"),
        ({"trainable_token_indices": [1, 2]}, UnsupportedAdapterError, "trainable_token_indices"),
        ({"alora_invocation_tokens": [5]}, UnsupportedAdapterError, "Activated LoRA"),
        ({"lora_bias": True}, UnsupportedAdapterError, "lora_bias trains a bias"),
    ],
)
def test_config_problems(
    make_adapter: MakeAdapter,
    tmp_path: Path,
    changes: dict[str, Any],
    error: type[Exception],
    needle: str,
) -> None:
    path = _edited(make_adapter("one", r=4, lora_alpha=8, seed=1), tmp_path / "x", **changes)
    with pytest.raises(error, match=needle):
        _load(path)


def test_plain_inits_are_accepted(make_adapter: MakeAdapter, tmp_path: Path) -> None:
    source = make_adapter("one", r=4, lora_alpha=8, seed=1)
    for init in ("gaussian", "eva", False):
        _load(_edited(source, tmp_path / str(init), init_lora_weights=init))


def test_unreadable_files(make_adapter: MakeAdapter, tmp_path: Path) -> None:
    source = make_adapter("one", r=4, lora_alpha=8, seed=1)
    bad_json = tmp_path / "bad-json"
    shutil.copytree(source, bad_json)
    (bad_json / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterConfigError, match=r"cannot read .*adapter_config\.json"):
        _load(bad_json)
    bad_weights = tmp_path / "bad-weights"
    shutil.copytree(source, bad_weights)
    (bad_weights / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterConfigError, match="cannot read its weights"):
        _load(bad_weights)
