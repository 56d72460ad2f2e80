"""The CPU-capable presets: small, consistent, valid on small GPU SKUs, runnable locally."""

from __future__ import annotations

import re

import pytest

from api.config import DEFAULT_CONFIG
from api.presets import DTYPE_BYTES, load_presets
from api.validation import ValidationContext, validate_create
from api.workspace import Runtime
from reconciler.local.plan import LocalOptions, build_plan, check

CPU_PRESETS = {
    # name: (Hugging Face repo, parameters from config.json, context length)
    "qwen2.5-0.5b-instruct": ("Qwen/Qwen2.5-0.5B-Instruct", 494_032_768, 32768),
    "smollm2-360m-instruct": ("HuggingFaceTB/SmolLM2-360M-Instruct", 361_821_120, 8192),
    "tinyllama-1.1b-chat": ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1_100_048_384, 2048),
}
SMALL_SKUS = ("Standard_NC4as_T4_v3", "g4dn.xlarge", "Standard_NC6s_v3")


def workspace(preset: str, sku: str, runtime: str) -> dict[str, object]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "workspace-small", "annotations": {"kaito.sh/runtime": runtime}},
        "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"apps": "small"}}},
        "inference": {"preset": {"name": preset}},
    }


def test_the_cpu_capable_presets_are_exactly_the_small_ones() -> None:
    catalog = load_presets()
    assert {p.name for p in catalog if p.cpu_capable} == set(CPU_PRESETS)
    assert all(p.parameters > 2_000_000_000 for p in catalog if not p.cpu_capable)


@pytest.mark.parametrize("name", sorted(CPU_PRESETS))
def test_entries_match_the_model_cards(name: str) -> None:
    p = load_presets().get(name)
    assert p is not None
    repo, parameters, context = CPU_PRESETS[name]
    assert (p.hf_repo, p.parameters, p.context_length) == (repo, parameters, context)
    assert p.parameters < 2_000_000_000
    assert re.fullmatch(r"[0-9a-f]{40}", p.revision)
    assert p.weight_bytes == p.parameters * DTYPE_BYTES[p.dtype]
    assert p.num_attention_heads % p.num_kv_heads == 0
    assert set(p.runtimes) == {Runtime.VLLM, Runtime.TRANSFORMERS}
    assert not p.gated
    assert p.chat_template is None  # instruct tokenizers ship their own template


@pytest.mark.parametrize("name", sorted(CPU_PRESETS))
@pytest.mark.parametrize("sku", SMALL_SKUS)
@pytest.mark.parametrize("runtime", ["vllm", "transformers"])
def test_they_validate_on_small_gpu_skus(name: str, sku: str, runtime: str) -> None:
    assert validate_create(workspace(name, sku, runtime), ValidationContext.default()) == []


def test_a_cpu_preset_runs_locally_from_its_pinned_revision() -> None:
    defaulted, errors = check(
        workspace("qwen2.5-0.5b-instruct", "g4dn.xlarge", "vllm"), DEFAULT_CONFIG
    )
    assert errors == []
    plan = build_plan(defaulted, DEFAULT_CONFIG, LocalOptions(memory_bytes=4 << 30))
    argv = plan.argv
    assert argv[argv.index("--model") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert argv[argv.index("--revision") + 1] == "7ae557604adf67be50417f59c2c2f167def9a775"
    assert "--chat-template" not in argv
    assert not any(n.startswith("warning:") for n in plan.notes)  # 0.9 GiB fits 4 GiB
