"""``api.inference_config``: the catalog of ``inference_config.yaml`` keys, parse and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.inference_config import (
    SECTIONS,
    TOP_KEYS,
    catalog_markdown,
    parse,
    runtime_flags,
)
from api.workspace import INFERENCE_CONFIG_KEY, Runtime

README = Path(__file__).resolve().parents[2] / "README.md"


def _data(text: str) -> dict[str, str]:
    return {INFERENCE_CONFIG_KEY: text}


def test_kaito_template_parses_and_reports_ignored_keys() -> None:
    text = (
        "# Maximum number of steps to find the max available seq len\n"
        "max_probe_steps: 6\n"
        "vllm:\n"
        "  cpu-offload-gb: 0\n"
        "  gpu-memory-utilization: 0.95\n"
        "  swap-space: 4\n"
        "  max-model-len: 4096\n"
    )
    config, errors = parse("params", _data(text))
    assert errors == []
    assert config is not None
    assert dict(config.section(Runtime.VLLM)) == {
        "cpu-offload-gb": 0,
        "gpu-memory-utilization": 0.95,
        "swap-space": 4,
        "max-model-len": 4096,
    }
    assert config.ignored() == ["max_probe_steps", "vllm.swap-space"]
    assert len(config.digest) == 16


def test_missing_configmap_and_missing_key() -> None:
    _, errors = parse("params", None)
    assert [e.reason for e in errors] == ["inferenceconfig.missing"]
    text = str(errors[0])
    assert text.startswith("inference.config: ConfigMap params, key inference_config.yaml:")
    assert "does not exist" in text
    assert "kubectl create configmap params" in text
    _, errors = parse("params", {"other.yaml": "x: 1"})
    assert "has no inference_config.yaml key (its keys: other.yaml)" in str(errors[0])


def test_unknown_keys_are_named_with_the_known_ones() -> None:
    _, errors = parse("p", _data("vllm:\n  max-model-length: 10\nllama: {}\n"))
    texts = [str(e) for e in errors]
    assert len(texts) == 2
    assert "vllm.max-model-length is not a known setting" in texts[0]
    assert "did you mean max-model-len?" in texts[0]
    assert "gpu-memory-utilization" in texts[0]  # the known keys are listed
    assert "llama is not a known setting" in texts[1]
    assert "vllm, transformers, max_probe_steps" in texts[1]


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("vllm:\n  gpu-memory-utilization: 1.5\n", "a number above 0 and at most 1"),
        ("vllm:\n  gpu-memory-utilization: 0\n", "(got 0)"),
        ("vllm:\n  max-lora-rank: 1024\n", "an integer from 1 to 512"),
        ("vllm:\n  max-model-len: 4096.5\n", "must be an integer"),
        ("vllm:\n  max-model-len: '4096'\n", 'must be an integer from 1 to 10000000 (got "4096")'),
        ("vllm:\n  enforce-eager: yes please\n", "must be true or false"),
        ("vllm:\n  dtype: fp32\n", 'must be one of auto, float32, bfloat16, float16 (got "fp32")'),
        ("vllm:\n  max-num-seqs: true\n", "must be an integer"),
        ("vllm:\n  cpu-offload-gb: .nan\n", "finite"),
        ("transformers:\n  max-num-seqs: 0\n", "an integer from 1 to 4096"),
        ("transformers:\n  max-n: 40\n", "max-n (40) exceeds transformers.max-num-seqs (32)"),
        ("vllm: 3\n", "vllm must be a mapping"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("vllm:\n  a: [\n", "is not valid YAML at line"),
    ],
)
def test_bad_values_name_key_value_and_fix(yaml_text: str, needle: str) -> None:
    config, errors = parse("cm", _data(yaml_text))
    assert config is None
    assert len(errors) == 1
    text = str(errors[0])
    assert needle in text, text
    assert text.startswith("inference.config: ConfigMap cm, key inference_config.yaml:")
    assert "; fix: " in text


def test_empty_config_is_valid() -> None:
    config, errors = parse("cm", _data(""))
    assert errors == []
    assert config is not None
    assert config.sections == {}


def test_vllm_flags() -> None:
    text = (
        "vllm:\n  max-model-len: 256\n  gpu-memory-utilization: 0.8\n  max-lora-rank: 64\n"
        "  max-num-seqs: 8\n  enable-prefix-caching: false\n  enforce-eager: true\n"
        "  swap-space: 4\n  dtype: float32\ntransformers:\n  max-num-seqs: 4\n"
    )
    config, errors = parse("cm", _data(text))
    assert config is not None, errors
    base = ["python", "-m", "runtime.vllm", "--preset", "p"]
    assert runtime_flags(config, Runtime.VLLM, base) == [
        *base,
        "--max-model-len",
        "256",
        "--min-model-len",
        "256",
        "--gpu-memory-utilization",
        "0.8",
        "--max-lora-rank",
        "64",
        "--vllm-arg=--max-num-seqs=8",
        "--dtype",
        "float32",
        "--vllm-arg=--no-enable-prefix-caching",
        "--vllm-arg=--enforce-eager",
    ]


def test_transformers_caps_the_sized_context() -> None:
    base = ["python", "-m", "runtime.server", "--max-model-len", "2048", "--port", "5000"]
    small, _ = parse("cm", _data("transformers:\n  max-model-len: 1024\n  max-n: 2\n"))
    large, _ = parse("cm", _data("transformers:\n  max-model-len: 9999\n"))
    assert small is not None
    assert large is not None
    assert runtime_flags(small, Runtime.TRANSFORMERS, base) == [
        "python", "-m", "runtime.server", "--max-model-len", "1024", "--port", "5000",
        "--max-n", "2",
    ]  # fmt: skip
    assert runtime_flags(large, Runtime.TRANSFORMERS, base) == base
    assert runtime_flags(large, Runtime.TRANSFORMERS, base[:3]) == [
        *base[:3],
        "--max-model-len",
        "9999",
    ]


def test_digest_follows_the_text() -> None:
    a, _ = parse("cm", _data("vllm:\n  max-model-len: 1024\n"))
    b, _ = parse("cm", _data("vllm:\n  max-model-len: 2048\n"))
    assert a is not None
    assert b is not None
    assert a.digest != b.digest


def test_readme_documents_every_key() -> None:
    """The README's table is ``catalog_markdown()`` (regenerate it from there)."""
    readme = [line.strip() for line in README.read_text().splitlines()]
    table = catalog_markdown().splitlines()
    assert table[0] in readme
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table
    for keys in (TOP_KEYS, *SECTIONS.values()):
        for key in keys:
            assert f"`{key.name}`" in catalog_markdown()
