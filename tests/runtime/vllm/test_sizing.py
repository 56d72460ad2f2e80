"""The launcher's memory arithmetic: consistent with api.sizing, and its errors."""

from __future__ import annotations

import pytest

from api.presets import load_presets
from api.sizing import Fit, estimate, serving_dtype, shape_of_sku, valid_tensor_parallel_sizes
from api.skus import load_skus
from runtime.vllm.errors import LoraError, ModelDoesNotFitError
from runtime.vllm.inputs import GIB, AdminDefaults, Hardware, PresetSpec
from runtime.vllm.sizing import LoraSlots, lora_rank_slot, plan_sizing, tensor_parallel_size
from tests.runtime.vllm.scenarios import hardware_of

PRESETS = list(load_presets())
SKUS = list(load_skus())


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_agrees_with_the_admission_estimator_on_every_sku(preset: object) -> None:
    """Where api.sizing (the webhook, the reconciler) says a preset fits, the launcher starts it
    with the same parallel sizes and dtype, and a context at least 99% as long."""
    from api.presets import Preset

    assert isinstance(preset, Preset)
    checked = 0
    for sku in SKUS:
        hardware = hardware_of(sku)
        assert (
            tensor_parallel_size(preset, sku.gpu_count)
            == (valid_tensor_parallel_sizes(preset, sku.gpu_count)[0])
        )
        fit = estimate(preset, shape_of_sku(sku))
        if not isinstance(fit, Fit):
            continue
        checked += 1
        pod = Hardware(fit.gpus_per_node, hardware.gpu_memory_bytes, hardware.compute_capability)
        sizing = plan_sizing(preset, pod, node_count=fit.node_count, defaults=AdminDefaults())
        assert sizing.dtype == fit.dtype == serving_dtype(preset, sku.supports_bfloat16)
        assert sizing.tensor_parallel_size == fit.tensor_parallel_size
        assert sizing.pipeline_parallel_size == fit.pipeline_parallel_size
        assert sizing.weight_bytes_per_gpu == fit.weight_bytes_per_gpu
        assert fit.max_model_len * 0.99 <= sizing.max_model_len <= fit.max_model_len
    assert checked > 0


def _preset(**changes: object) -> PresetSpec:
    base = {
        "name": "toy",
        "hf_repo": "org/toy",
        "revision": "0" * 40,
        "dtype": "bfloat16",
        "context_length": 8192,
        "weight_bytes": 14 * GIB,
        "parameters": 7 * GIB,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_kv_heads": 8,
        "head_dim": 128,
        "distributed": False,
    }
    return PresetSpec.from_mapping({**base, **changes})


def test_seed_example_falcon_7b_on_one_v100() -> None:
    falcon = load_presets().get("falcon-7b")
    assert falcon is not None
    v100 = Hardware(1, 16 * GIB, (7, 0))
    sizing = plan_sizing(falcon, v100, node_count=1, defaults=AdminDefaults())
    assert (sizing.dtype, sizing.tensor_parallel_size, sizing.max_model_len) == (
        "float16",
        1,
        2048,
    )
    # 0.9 x 16 GiB - 768 MiB - 12.89 GiB of weights = 0.76 GiB at 8 KiB per token.
    assert sizing.kv_bytes_per_token_per_gpu == 2 * 32 * 1 * 64 * 2
    assert sizing.kv_cache_tokens == (
        int(16 * GIB * 0.9) - 768 * 2**20 - sizing.weight_bytes_per_gpu
    ) // (8 * 1024)


def test_context_is_cut_to_the_kv_room_and_the_admin_cap() -> None:
    toy = _preset(context_length=131072)
    a10 = Hardware(1, 24 * GIB, (8, 6))
    sizing = plan_sizing(toy, a10, node_count=1, defaults=AdminDefaults())
    assert sizing.dtype == "bfloat16"
    # (0.9 x 24 GiB - 768 MiB - 14 GiB) / 128 KiB per token.
    assert sizing.max_model_len == sizing.kv_cache_tokens == 56115
    capped = plan_sizing(toy, a10, node_count=1, defaults=AdminDefaults(max_model_len=1000))
    assert capped.max_model_len == 1000
    assert "capped by the admin at 1000" in capped.notes[-1]


def test_lora_slots_take_memory() -> None:
    toy = _preset()
    gpu = Hardware(1, 40 * GIB, (8, 0))
    plain = plan_sizing(toy, gpu, node_count=1, defaults=AdminDefaults())
    with_lora = plan_sizing(
        toy, gpu, node_count=1, defaults=AdminDefaults(), lora=LoraSlots(count=4, rank=64)
    )
    # 4 slots x rank 64 x 2 bytes x 2 x 7 Gi parameters / 4096 hidden.
    assert with_lora.lora_bytes_per_gpu == 4 * 64 * 2 * 2 * 7 * GIB // 4096
    assert with_lora.kv_cache_tokens < plain.kv_cache_tokens


def test_does_not_fit_names_the_numbers_and_the_fix() -> None:
    toy = _preset(weight_bytes=40 * GIB, parameters=20 * GIB)
    with pytest.raises(ModelDoesNotFitError) as err:
        plan_sizing(toy, Hardware(1, 16 * GIB, (7, 5)), node_count=1, defaults=AdminDefaults())
    message = str(err.value)
    assert "toy does not fit" in message
    assert "offers 13.65 GiB" in message
    assert "40.00 GiB of float16 weights" in message
    assert "more GPU memory" in message
    with pytest.raises(ModelDoesNotFitError, match="does not support multi-node"):
        plan_sizing(toy, Hardware(8, 80 * GIB, (9, 0)), node_count=2, defaults=AdminDefaults())
    with pytest.raises(ModelDoesNotFitError, match="has no GPU"):
        plan_sizing(toy, Hardware(0, 80 * GIB, (9, 0)), node_count=1, defaults=AdminDefaults())


def test_pipeline_stages_split_layers() -> None:
    toy = _preset(distributed=True, weight_bytes=140 * GIB, parameters=70 * GIB, num_layers=80)
    sizing = plan_sizing(toy, Hardware(2, 80 * GIB, (8, 0)), node_count=2, defaults=AdminDefaults())
    assert (sizing.tensor_parallel_size, sizing.pipeline_parallel_size) == (2, 2)
    assert sizing.weight_bytes_per_gpu == 35 * GIB


@pytest.mark.parametrize(
    ("rank", "limit", "slot"), [(1, 256, 1), (2, 256, 8), (24, 256, 32), (320, 512, 320)]
)
def test_lora_rank_slots(rank: int, limit: int, slot: int) -> None:
    assert lora_rank_slot(rank, limit) == slot


def test_lora_rank_above_the_limit() -> None:
    with pytest.raises(LoraError, match=r"need LoRA rank 100 \(--max-lora-rank 128\), above the "):
        lora_rank_slot(100, 64)
    with pytest.raises(LoraError, match="more than vLLM's largest, 512"):
        lora_rank_slot(600, 512)
