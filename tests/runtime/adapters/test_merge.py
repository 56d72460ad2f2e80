"""merge_into against PEFT's own deltas, on the tiny Llama and a tiny GPT-2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.adapters import (
    AdapterSpec,
    BaseModelMismatchError,
    IncompatibleAdapterError,
    LoraAdapter,
    LoraModule,
    MissingTargetModuleError,
    ShapeMismatchError,
    UnsupportedAdapterError,
    load_adapter,
    load_adapters,
    merge_into,
)
from tests.runtime.adapters.conftest import MakeAdapter, varied_adapters
from tests.runtime.adapters.peft_oracle import expected_weights, load_base

TOL = 1e-5


def _specs(paths: dict[str, Path], strengths: dict[str, float]) -> list[AdapterSpec]:
    return [AdapterSpec(name, paths[name], strengths[name]) for name in paths]


def _assert_merged(
    base_dir: Path, paths: dict[str, Path], strengths: dict[str, float]
) -> torch.nn.Module:
    model = load_base(base_dir)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    report = merge_into(model, load_adapters(_specs(paths, strengths)))
    want = expected_weights(base_dir, paths, strengths)
    after = model.state_dict()
    for module, weight in want.items():
        got = after[f"{module}.weight"]
        assert (got - weight).abs().max().item() < TOL, module
        assert not torch.equal(got, before[f"{module}.weight"]) or all(
            s == 0 for s in strengths.values()
        )
    untouched = set(before) - {f"{m}.weight" for m in want}
    for key in untouched:
        assert torch.equal(after[key], before[key]), key
    nonzero = {m for m in want if any(strengths.values())}
    assert report.modules_changed == len(nonzero)
    return model


def test_one_adapter(make_adapter: MakeAdapter, tiny_llama: Path) -> None:
    paths = {"one": make_adapter("one", r=4, lora_alpha=8, seed=1)}
    _assert_merged(tiny_llama, paths, {"one": 0.2})


def test_several_adapters_ranks_alphas_rslora_patterns(
    make_adapter: MakeAdapter, tiny_llama: Path
) -> None:
    paths = {
        **varied_adapters(make_adapter, "plain", "rs", "pattern"),
        "one-layer": make_adapter(
            "one-layer",
            r=3,
            lora_alpha=5,
            target_modules=["up_proj", "lm_head"],
            layers_to_transform=[1],
            layers_pattern="layers",
            seed=4,
        ),
    }
    _assert_merged(tiny_llama, paths, {"plain": 0.2, "rs": 0.7, "pattern": 1.0, "one-layer": 0.5})


def test_rank_and_scaling_follow_patterns(make_adapter: MakeAdapter) -> None:
    adapter = load_adapter(
        AdapterSpec(
            "pattern",
            make_adapter(
                "pattern",
                r=2,
                lora_alpha=4,
                target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                rank_pattern={"layers.1.self_attn.q_proj": 6},
                alpha_pattern={"v_proj": 3},
                seed=3,
            ),
            1.0,
        )
    )
    q1 = adapter.modules["model.layers.1.self_attn.q_proj"]
    q0 = adapter.modules["model.layers.0.self_attn.q_proj"]
    v0 = adapter.modules["model.layers.0.self_attn.v_proj"]
    assert (q1.rank, q1.scaling) == (6, 4 / 6)
    assert (q0.rank, q0.scaling) == (2, 2.0)
    assert (v0.rank, v0.scaling) == (2, 1.5)


def test_strength_zero_reproduces_base_logits(make_adapter: MakeAdapter, tiny_llama: Path) -> None:
    paths = {"one": make_adapter("one", r=4, lora_alpha=8, seed=1)}
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    base = load_base(tiny_llama)
    with torch.no_grad():
        base_logits = base(ids).logits
    model = load_base(tiny_llama)
    report = merge_into(model, load_adapters(_specs(paths, {"one": 0.0})))
    assert report.modules_changed == 0
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base_logits)
    # And a non-zero strength really changes them (the check above can fail).
    merge_into(model, load_adapters(_specs(paths, {"one": 1.0})))
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, base_logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_merged_in_float32_and_cast_once(
    make_adapter: MakeAdapter, tiny_llama: Path, dtype: torch.dtype
) -> None:
    adapter = load_adapter(AdapterSpec("one", make_adapter("one", r=4, lora_alpha=8, seed=1), 0.3))
    model = load_base(tiny_llama, dtype)
    name = "model.layers.0.self_attn.q_proj"
    weight = model.get_submodule(name).weight
    want = (weight.detach().float() + adapter.modules[name].delta(0.3)).to(dtype)
    merge_into(model, [adapter])
    assert weight.dtype == dtype
    assert torch.equal(weight.detach(), want)


def test_fan_in_fan_out_gpt2(make_adapter: MakeAdapter, tiny_gpt2: Path) -> None:
    paths = {
        "gpt2": make_adapter(
            "gpt2",
            base=tiny_gpt2,
            r=4,
            lora_alpha=6,
            target_modules=["c_attn", "c_proj"],
            fan_in_fan_out=True,
            seed=5,
        )
    }
    _assert_merged(tiny_gpt2, paths, {"gpt2": 0.6})


def test_other_architecture_names_adapter_and_modules(
    make_adapter: MakeAdapter, tiny_llama: Path, tiny_gpt2: Path
) -> None:
    path = make_adapter(
        "gpt2",
        base=tiny_gpt2,
        r=4,
        lora_alpha=6,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        seed=5,
    )
    model = load_base(tiny_llama)
    with pytest.raises(MissingTargetModuleError) as err:
        merge_into(model, [load_adapter(AdapterSpec("gpt2", path, 0.5))])
    message = str(err.value)
    assert "adapter 'gpt2' targets 6 module(s) the base model does not have" in message
    assert "'transformer.h.0.attn.c_attn'" in message
    assert "q_proj" in message  # what the base model has
    assert "tiny-gpt2" in message  # the base the adapter was trained on
    assert err.value.adapter == "gpt2"


def test_other_size_is_a_shape_mismatch_and_nothing_changes(
    make_adapter: MakeAdapter, tiny_llama: Path
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    good = load_adapter(AdapterSpec("one", make_adapter("one", r=4, lora_alpha=8, seed=1), 1.0))
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    other = LlamaForCausalLM(config)
    bad = load_adapter(
        AdapterSpec(
            "mlp", make_adapter("mlp", r=2, lora_alpha=2, target_modules=["up_proj"], seed=6), 1.0
        )
    )
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        ShapeMismatchError,
        match=r"adapter 'mlp': module 'model.layers.0.mlp.up_"
        r"proj' has a delta of shape \(128, 64\) but the base weight is \(96, 64\)",
    ):
        merge_into(other, [good, bad])
    for key, value in other.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_base_name_hint_warns_or_refuses(make_adapter: MakeAdapter, tiny_llama: Path) -> None:
    adapter = load_adapter(AdapterSpec("one", make_adapter("one", r=4, lora_alpha=8, seed=1), 1.0))
    hub = LoraAdapter(
        name="hub",
        path=adapter.path,
        strength=1.0,
        config={**adapter.config, "base_model_name_or_path": "tiiuae/falcon-7b"},
        modules=adapter.modules,
    )
    # A local path (what a KAITO tuning job records) is not compared.
    assert merge_into(load_base(tiny_llama), [adapter], base_name="org/tiny").warnings == ()
    report = merge_into(load_base(tiny_llama), [hub], base_name="org/tiny")
    assert report.warnings == (
        "adapter 'hub' was trained on 'tiiuae/falcon-7b' but the served model is 'org/tiny'; "
        "the shapes match, so it is applied, but check that it belongs to this model",
    )
    assert merge_into(load_base(tiny_llama), [hub], base_name="TIIUAE/Falcon-7b").warnings == ()
    with pytest.raises(BaseModelMismatchError, match="trained on 'tiiuae/falcon-7b'"):
        merge_into(load_base(tiny_llama), [hub], base_name="org/tiny", strict_base_name=True)


def _in_memory_adapter(name: str, module: str, shape: tuple[int, int]) -> LoraAdapter:
    out, inp = shape
    lora = LoraModule(
        name=module,
        lora_a=torch.ones(2, inp),
        lora_b=torch.ones(out, 2),
        alpha=2.0,
        scaling=1.0,
        fan_in_fan_out=False,
    )
    return LoraAdapter(
        name=name, path=Path("/nowhere"), strength=1.0, config={}, modules={module: lora}
    )


def test_tied_weights_are_refused() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with pytest.raises(UnsupportedAdapterError, match=r"'lm_head'.*shared with model.embed_tokens"):
        merge_into(model, [_in_memory_adapter("head", "lm_head", (32, 16))])


def test_same_adapter_twice_is_refused() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(config)
    a = _in_memory_adapter("a", "model.layers.0.self_attn.q_proj", (16, 16))
    with pytest.raises(IncompatibleAdapterError, match="'a' is given more than once"):
        merge_into(model, [a, a])


def test_checkpoint_headers_give_the_same_check(
    make_adapter: MakeAdapter, tiny_llama: Path, tiny_gpt2: Path
) -> None:
    from runtime.adapters import check_compatible, checkpoint_weights, model_weights

    from_disk = checkpoint_weights(tiny_llama)
    in_memory = model_weights(load_base(tiny_llama))
    assert {k: v.shape for k, v in from_disk.items()} == {k: v.shape for k, v in in_memory.items()}
    good = load_adapter(AdapterSpec("one", make_adapter("one", r=4, lora_alpha=8, seed=1), 1.0))
    assert check_compatible([good], from_disk) == []
    gpt2 = load_adapter(
        AdapterSpec(
            "gpt2",
            make_adapter(
                "gpt2",
                base=tiny_gpt2,
                r=4,
                lora_alpha=6,
                target_modules=["c_attn", "c_proj"],
                fan_in_fan_out=True,
                seed=5,
            ),
            1.0,
        )
    )
    with pytest.raises(MissingTargetModuleError, match="adapter 'gpt2' targets 6 module"):
        check_compatible([good, gpt2], from_disk)
    assert checkpoint_weights(tiny_llama / "absent") == {}
