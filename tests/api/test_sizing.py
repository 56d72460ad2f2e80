from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.presets import load_presets
from api.sizing import (
    DEFAULT_ALLOWANCE,
    Fit,
    NoFit,
    estimate,
    fitting_skus,
    shape_of_node,
    shape_of_sku,
    valid_tensor_parallel_sizes,
)
from api.skus import GIB, load_skus
from api.workspace import Runtime

PRESETS = load_presets()
SKUS = load_skus()


def _est(preset: str, sku: str, runtime: Runtime = Runtime.VLLM) -> Fit | NoFit:
    p, s = PRESETS.get(preset), SKUS.get(sku)
    assert p is not None
    assert s is not None
    return estimate(p, shape_of_sku(s), runtime)


@pytest.mark.parametrize("runtime", list(Runtime))
@pytest.mark.parametrize("sku", ["Standard_NC6s_v3", "Standard_NC12s_v3"])
def test_the_seed_examples_fit(sku: str, runtime: Runtime) -> None:
    fit = _est("falcon-7b", sku, runtime)
    assert isinstance(fit, Fit), fit
    assert fit.node_count == 1
    assert fit.tensor_parallel_size == 1  # 71 heads: no tensor parallelism
    assert fit.max_model_len == 2048  # the whole context
    assert fit.dtype == "float16"  # V100 has no bfloat16


def test_falcon_on_one_v100_numbers() -> None:
    fit = _est("falcon-7b", "Standard_NC6s_v3")
    assert isinstance(fit, Fit)
    assert fit.usable_bytes_per_gpu == int(16 * GIB * 0.9) - 768 * 2**20
    assert 12.8 * GIB < fit.weight_bytes_per_gpu < 12.9 * GIB
    assert 90_000 < fit.kv_cache_tokens < 110_000  # 8 KiB per token (multi-query attention)


def test_transformers_splits_layers_over_the_node() -> None:
    fit = _est("falcon-7b", "Standard_NC12s_v3", Runtime.TRANSFORMERS)
    assert isinstance(fit, Fit)
    assert (fit.gpus_per_node, fit.tensor_parallel_size, fit.pipeline_parallel_size) == (2, 1, 1)


def test_mistral_needs_two_v100s() -> None:
    no = _est("mistral-7b", "Standard_NC6s_v3")
    assert isinstance(no, NoFit)
    assert "13.5 GiB of weights" in no.reason
    assert "does not support multi-node" in no.reason
    fit = _est("mistral-7b", "Standard_NC12s_v3")
    assert isinstance(fit, Fit)
    assert fit.tensor_parallel_size == 2
    assert fit.max_model_len == 32768


def test_distributed_presets_spread_over_nodes_with_vllm_only() -> None:
    fit = _est("llama-2-13b", "Standard_NC6s_v3")
    assert isinstance(fit, Fit)
    assert (fit.node_count, fit.pipeline_parallel_size, fit.gpus_per_node) == (2, 2, 1)
    no = _est("llama-2-13b", "Standard_NC6s_v3", Runtime.TRANSFORMERS)
    assert isinstance(no, NoFit)
    assert "vllm can spread it over 2 nodes" in no.reason


def test_long_context_models_get_a_shorter_window() -> None:
    fit = _est("phi-3-mini-128k-instruct", "Standard_NC4as_T4_v3")
    assert isinstance(fit, Fit)
    assert DEFAULT_ALLOWANCE.min_kv_tokens <= fit.max_model_len < 131072


def test_big_models_on_big_nodes() -> None:
    fit = _est("llama-2-70b", "Standard_ND96asr_v4")
    assert isinstance(fit, Fit)
    assert fit.tensor_parallel_size == 8
    fit = _est("falcon-40b", "Standard_NC48ads_A100_v4")
    assert isinstance(fit, Fit)
    assert fit.dtype == "bfloat16"
    assert isinstance(_est("falcon-40b", "Standard_NC24ads_A100_v4"), NoFit)


def test_tensor_parallel_sizes_divide_the_heads() -> None:
    falcon = PRESETS.get("falcon-7b")
    llama70 = PRESETS.get("llama-2-70b")
    assert falcon is not None
    assert llama70 is not None
    assert valid_tensor_parallel_sizes(falcon, 8) == [1]
    assert valid_tensor_parallel_sizes(llama70, 8) == [8, 4, 2, 1]
    phi3m = PRESETS.get("phi-3-medium-4k-instruct")  # 40 heads, 10 KV heads
    assert phi3m is not None
    assert valid_tensor_parallel_sizes(phi3m, 8) == [5, 2, 1]


def test_prepared_node_shape() -> None:
    p = PRESETS.get("falcon-7b")
    assert p is not None
    assert isinstance(estimate(p, shape_of_node("gpu-1", 1, 16384)), Fit)
    no = estimate(p, shape_of_node("gpu-1", 1, 8192))
    assert isinstance(no, NoFit)
    assert "node gpu-1" in no.reason
    assert isinstance(estimate(p, shape_of_node("cpu", 0, 16384)), NoFit)


def test_fitting_skus_are_sorted_and_respect_allow_lists() -> None:
    p = PRESETS.get("falcon-7b")
    assert p is not None
    fits = fitting_skus(p, SKUS)
    assert fits
    sizes = [s.total_gpu_memory_bytes for s, f in fits if f.node_count == 1]
    assert sizes == sorted(sizes)
    only = fitting_skus(p, SKUS, allowed=frozenset({"g5.xlarge"}))
    assert [s.name for s, _ in only] == ["g5.xlarge"]


@settings(max_examples=80, deadline=None)
@given(
    preset=st.sampled_from(PRESETS.names()),
    gpus=st.integers(1, 8),
    mib=st.integers(4 * 1024, 160 * 1024),
    runtime=st.sampled_from(list(Runtime)),
)
def test_a_fit_leaves_room_and_more_memory_never_hurts(
    preset: str, gpus: int, mib: int, runtime: Runtime
) -> None:
    p = PRESETS.get(preset)
    assert p is not None
    result = estimate(p, shape_of_node("n", gpus, mib), runtime)
    if isinstance(result, Fit):
        floor = DEFAULT_ALLOWANCE.floor_tokens(p)
        assert result.weight_bytes_per_gpu < result.usable_bytes_per_gpu
        assert floor <= result.max_model_len <= p.context_length
        assert result.gpus_per_node <= gpus
        assert p.num_attention_heads % result.tensor_parallel_size == 0
        if runtime is Runtime.TRANSFORMERS or not p.distributed:
            assert result.node_count == 1
        bigger = estimate(p, shape_of_node("n", gpus, mib * 2), runtime)
        assert isinstance(bigger, Fit)
        assert bigger.node_count <= result.node_count
    else:
        assert result.reason
        assert result.required_bytes > p.weight_bytes
