from __future__ import annotations

import re

import pytest
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from api.errors import CatalogError
from api.presets import DTYPE_BYTES, load_chat_templates, load_presets, parse_presets
from api.sizing import min_total_gpu_memory_bytes
from api.workspace import Runtime

ISSUE_PRESETS = [
    "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct", "mistral-7b",
    "mistral-7b-instruct", "phi-2", "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct", "phi-3-medium-128k-instruct", "llama-2-7b", "llama-2-7b-chat",
    "llama-2-13b", "llama-2-13b-chat", "llama-2-70b", "llama-2-70b-chat",
    "qwen2.5-coder-7b-instruct",
]  # fmt: skip


def test_every_model_of_the_issue_is_in_the_catalog() -> None:
    catalog = load_presets()
    assert set(ISSUE_PRESETS) <= set(catalog.names())
    assert catalog.get("falcon-7b") is not None
    assert catalog.get("Falcon-7B") is None  # names are exact
    assert catalog.get("gpt-5") is None


@pytest.mark.parametrize("name", ISSUE_PRESETS)
def test_entries_are_consistent(name: str) -> None:
    p = load_presets().get(name)
    assert p is not None
    assert re.fullmatch(r"[0-9a-f]{40}", p.revision), "revisions are pinned commit SHAs"
    assert "/" in p.hf_repo
    assert p.weight_bytes == p.parameters * DTYPE_BYTES[p.dtype]
    assert p.num_attention_heads % p.num_kv_heads == 0
    assert p.kv_cache_bytes_per_token == 4 * p.num_layers * p.num_kv_heads * p.head_dim
    assert set(p.runtimes) == {Runtime.VLLM, Runtime.TRANSFORMERS}
    assert p.cpu_capable is False
    assert min_total_gpu_memory_bytes(p) > p.weight_bytes


def test_known_facts() -> None:
    c = load_presets()
    falcon = c.get("falcon-7b")
    assert falcon is not None
    assert (falcon.parameters, falcon.context_length, falcon.num_attention_heads) == (
        6921720704,
        2048,
        71,
    )
    assert falcon.revision == "ec89142b67d748a1865ea4451372db8313ada0d8"
    assert falcon.revision_source == "kaito"
    assert not falcon.vllm_lora
    assert falcon.chat_template_name == "falcon-instruct"
    assert c.get("phi-3-mini-128k-instruct").context_length == 131072  # type: ignore[union-attr]
    llama70 = c.get("llama-2-70b-chat")
    assert llama70 is not None
    assert llama70.distributed
    assert llama70.gated
    assert llama70.revision_source == "hf-snapshot"
    assert llama70.is_estimate("revision")
    assert not c.get("mistral-7b-instruct").distributed  # type: ignore[union-attr]


def test_presets_without_a_tokenizer_template_get_one() -> None:
    c = load_presets()
    for name in ("falcon-7b", "falcon-7b-instruct", "falcon-40b", "phi-2", "mistral-7b",
                 "llama-2-7b", "llama-2-7b-chat", "llama-2-70b"):  # fmt: skip
        p = c.get(name)
        assert p is not None
        assert p.chat_template, name
    assert c.get("phi-3-mini-4k-instruct").chat_template is None  # type: ignore[union-attr]


def _render(template: str, messages: list[dict[str, str]], gen: bool = True) -> str:
    """Render as transformers' apply_chat_template does (an immutable sandbox)."""

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=gen, bos_token="<s>", eos_token="</s>"
    )


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
]


@pytest.mark.parametrize("name", sorted(load_chat_templates()))
def test_chat_templates_render_a_conversation(name: str) -> None:
    text = _render(load_chat_templates()[name], CHAT)
    assert "Hi" in text
    assert "Capital of France?" in text
    assert text.index("Hi") < text.index("Hello!") < text.index("Capital of France?")


def test_template_formats() -> None:
    t = load_chat_templates()
    assert _render(t["falcon-instruct"], CHAT[1:2]) == "User: Hi\nAssistant:"
    assert _render(t["phi-2"], CHAT[1:2]) == "Instruct: Hi\nOutput:"
    assert (
        _render(t["llama-2-chat"], CHAT[:2])
        == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    )
    assert _render(t["mistral-instruct"], CHAT[1:3]) == "<s>[INST] Hi [/INST] Hello!</s>"
    with pytest.raises(TemplateError):
        _render(t["llama-2-chat"], [{"role": "assistant", "content": "x"}])


def test_loader_refuses_bad_entries() -> None:
    good = {
        "name": "x", "hf_repo": "a/b", "revision": "0" * 40, "revision_source": "kaito",
        "architecture": "A", "model_type": "a", "parameters": 10, "dtype": "float16",
        "weight_bytes": 20, "context_length": 8, "num_layers": 1, "num_attention_heads": 2,
        "num_kv_heads": 1, "head_dim": 4, "vocab_size": 4, "distributed": False,
        "runtimes": ["vllm"], "vllm_lora": True, "trust_remote_code": False, "gated": False,
    }  # fmt: skip
    assert parse_presets({"presets": [good]}, {}).names() == ["x"]
    for bad, words in [
        ({**good, "dtype": "int3"}, "dtype"),
        ({**good, "runtimes": ["tgi"]}, "runtimes"),
        ({**good, "chat_template": "nope"}, "chat_template"),
        ({**good, "parameters": "10"}, "parameters must be int"),
        ({**good, "extra": 1}, "unknown keys"),
        ({**good, "estimates": ["speed"]}, "estimates"),
        ({**good, "num_kv_heads": 3}, "multiple"),
    ]:
        with pytest.raises(CatalogError, match=words):
            parse_presets({"presets": [bad]}, {})
    with pytest.raises(CatalogError, match="twice"):
        parse_presets({"presets": [good, good]}, {})
