"""write_combined / write_scaled: loaded back by PEFT, their delta is Σ s_i·ΔW_i exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.adapters import (
    AdapterSpec,
    IncompatibleAdapterError,
    LoraAdapter,
    combined_rank,
    load_adapter,
    load_adapters,
    stack_lora,
    write_combined,
    write_scaled,
)
from tests.runtime.adapters.conftest import MakeAdapter, varied_adapters
from tests.runtime.adapters.peft_oracle import load_base, peft_deltas, peft_merged_weights

TOL = 1e-5


@pytest.fixture(scope="module")
def three(make_adapter: MakeAdapter) -> dict[str, Path]:
    return varied_adapters(make_adapter, "plain", "rs", "pattern")


def _delta_of(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    base = {k: v.detach() for k, v in load_base(base_dir).state_dict().items()}
    merged = peft_merged_weights(base_dir, adapter_dir)
    assert set(merged) == set(base)
    return {k: merged[k] - base[k] for k in base}


def _expected(
    base_dir: Path, paths: dict[str, Path], strengths: dict[str, float]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for module, by_adapter in peft_deltas(base_dir, paths).items():
        out[f"{module}.weight"] = sum(
            (strengths[n] * d for n, d in by_adapter.items()), torch.tensor(0.0)
        )
    return out


def _assert_delta(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key, delta in actual.items():
        want = expected.get(key)
        if want is None:
            assert torch.count_nonzero(delta) == 0, key
        else:
            assert (delta - want).abs().max().item() < TOL, key


def test_combined_equals_sum_of_scaled_deltas(
    three: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    strengths = {"plain": 0.2, "rs": 0.7, "pattern": 1.0}
    adapters = load_adapters([AdapterSpec(n, p, strengths[n]) for n, p in three.items()])
    written = write_combined(adapters, tmp_path / "combined")
    # q_proj of layer 1: 4 + 8 + 6 = 18; every module gets that rank, zero-padded.
    assert written.rank == combined_rank(adapters) == 18
    assert written.sources == (("plain", 0.2), ("rs", 0.7), ("pattern", 1.0))
    config = json.loads((written.path / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (18, 18, False)
    assert config["base_model_name_or_path"] == str(tiny_llama)
    expected = _expected(tiny_llama, three, strengths)
    assert written.modules == len(expected)
    _assert_delta(_delta_of(tiny_llama, written.path), expected)


@pytest.mark.parametrize("name", ["plain", "rs", "pattern"])
def test_scaled_single_adapter(
    three: dict[str, Path], tiny_llama: Path, tmp_path: Path, name: str
) -> None:
    adapter = load_adapter(AdapterSpec(name, three[name], 0.35))
    written = write_scaled(adapter, tmp_path / name)
    assert written.rank == adapter.max_rank
    expected = _expected(tiny_llama, {name: three[name]}, {name: 0.35})
    _assert_delta(_delta_of(tiny_llama, written.path), expected)


def test_strength_zero_writes_zero_delta(
    three: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    written = write_scaled(load_adapter(AdapterSpec("plain", three["plain"], 0.0)), tmp_path / "z")
    assert all(torch.count_nonzero(d) == 0 for d in _delta_of(tiny_llama, written.path).values())


def test_rewrite_replaces_previous_output(three: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_scaled(load_adapter(AdapterSpec("rs", three["rs"], 1.0)), out)
    write_scaled(load_adapter(AdapterSpec("plain", three["plain"], 1.0)), out)
    assert json.loads((out / "kaito_sources.json").read_text())[0]["name"] == "plain"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_mismatched_adapters_cannot_be_combined(three: dict[str, Path], tmp_path: Path) -> None:
    plain = load_adapter(AdapterSpec("plain", three["plain"], 1.0))
    module = plain.modules["model.layers.0.self_attn.q_proj"]
    wider = LoraAdapter(
        name="wider",
        path=plain.path,
        strength=1.0,
        config=plain.config,
        modules={
            module.name: type(module)(
                name=module.name,
                lora_a=torch.zeros(2, 32),
                lora_b=torch.zeros(64, 2),
                alpha=2,
                scaling=1.0,
                fan_in_fan_out=False,
            )
        },
    )
    with pytest.raises(IncompatibleAdapterError, match="'plain' and 'wider' disagree on module"):
        write_combined([plain, wider], tmp_path / "bad")


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    factors=st.lists(st.floats(-2, 2, allow_nan=False), min_size=4, max_size=4),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_stacking_is_exact(shapes: list[int], factors: list[float], pad: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    in_f, out_f = 5, 3
    blocks = [
        (torch.randn(r, in_f, generator=gen), torch.randn(out_f, r, generator=gen), factors[i])
        for i, r in enumerate(shapes)
    ]
    rank = sum(shapes) + pad
    a, b = stack_lora(blocks, rank, in_features=in_f, out_features=out_f)
    assert a.shape == (rank, in_f)
    assert b.shape == (out_f, rank)
    want = sum((f * (bb @ aa) for aa, bb, f in blocks), torch.zeros(out_f, in_f))
    assert torch.allclose(b @ a, want, atol=1e-5)
    with pytest.raises(ValueError, match="need rank"):
        stack_lora(blocks, sum(shapes) - 1, in_features=in_f, out_features=out_f)
