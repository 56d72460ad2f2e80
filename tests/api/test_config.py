from __future__ import annotations

import pytest

from api.config import CONFIG_KEYS, DEFAULT_CONFIG, parse_config
from api.errors import ConfigError
from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Runtime


def test_empty_config_is_the_default() -> None:
    assert parse_config({}) == DEFAULT_CONFIG
    assert parse_config(None) == DEFAULT_CONFIG
    assert DEFAULT_CONFIG.default_runtime is Runtime.VLLM
    assert DEFAULT_CONFIG.max_adapters == 10
    assert DEFAULT_CONFIG.allows_instance_type("anything")


def test_every_key() -> None:
    cfg = parse_config(
        {
            "defaultRuntime": "transformers",
            "defaultInstanceType": "my-node",
            "allowedInstanceTypes": "Standard_NC12s_v3, my-node\n g5.xlarge",
            "allowedPresets": "falcon-7b,phi-2",
            "extraSKUs": "- {name: my-node, gpuCount: 2, gpuMemory: 48Gi, gpuModel: L40S, "
            "computeCapability: '8.9'}",
            "maxAdapters": "3",
            "defaultAdapterStrength": "0.5",
            "vllmImage": "registry.example.com/kaito/vllm:0.33",
            "transformersImage": "registry.example.com/kaito/tfs:1",
            "vllmCpuImage": "registry.example.com/kaito/vllm-cpu:0.32",
        },
        presets=load_presets(),
        skus=load_skus(),
    )
    assert cfg.default_runtime is Runtime.TRANSFORMERS
    assert cfg.allows_instance_type("standard_nc12s_v3")
    assert not cfg.allows_instance_type("Standard_NC6s_v3")
    assert cfg.allows_preset("phi-2")
    assert not cfg.allows_preset("mistral-7b")
    (sku,) = cfg.extra_skus
    assert (sku.name, sku.gpu_count, sku.gpu_memory_mib, sku.supports_bfloat16) == (
        "my-node",
        2,
        48 * 1024,
        True,
    )
    merged = cfg.sku_catalog(load_skus())
    assert merged.get("MY-NODE") == sku
    assert cfg.max_adapters == 3
    assert cfg.default_adapter_strength == "0.5"
    assert cfg.runtime_images[Runtime.VLLM].endswith("vllm:0.33")
    assert cfg.vllm_cpu_image == "registry.example.com/kaito/vllm-cpu:0.32"
    assert set(CONFIG_KEYS) == {
        "defaultRuntime", "defaultInstanceType", "allowedInstanceTypes", "allowedPresets",
        "extraSKUs", "maxAdapters", "defaultAdapterStrength", "vllmImage", "transformersImage",
        "vllmCpuImage",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"defaultRunTime": "vllm"}, "defaultRunTime: unknown key"),
        (
            {"defaultRuntime": "tgi"},
            "defaultRuntime: 'tgi' is not a runtime; fix: use vllm or transformers",
        ),
        ({"maxAdapters": "many"}, "maxAdapters: 'many' is not a whole number from 0 to 64"),
        ({"maxAdapters": "65"}, "maxAdapters: '65'"),
        ({"defaultAdapterStrength": "2"}, "defaultAdapterStrength: strength '2' is out of range"),
        ({"extraSKUs": "{name: x"}, "extraSKUs: not valid YAML"),
        ({"extraSKUs": "name: x"}, "extraSKUs: must be a list"),
        ({"extraSKUs": "- {name: x, gpuCount: 0, gpuMemory: 8Gi}"}, "gpu_count must be an integer"),
        (
            {"extraSKUs": "- {name: x, gpuCount: 1, gpuMemory: lots}"},
            "'lots' is not a Kubernetes quantity",
        ),
        ({"extraSKUs": "- {name: x, gpus: 1}"}, "extraSKUs[0]: unknown keys ['gpus']"),
        (
            {"allowedInstanceTypes": "Standard_NC6s_v9"},
            "allowedInstanceTypes: ['Standard_NC6s_v9'] not in the SKU catalog",
        ),
        ({"allowedInstanceTypes": " "}, "allowedInstanceTypes: empty"),
        (
            {"allowedPresets": "falcon-8b"},
            "allowedPresets: ['falcon-8b'] not in the preset catalog",
        ),
        ({"defaultInstanceType": "nope"}, "defaultInstanceType: 'nope' is not in the SKU catalog"),
        ({"vllmImage": "Not An Image"}, "vllmImage: 'Not An Image' is not a valid image reference"),
        ({"maxAdapters": 3}, "maxAdapters: value must be a string"),
    ],
)
def test_errors_name_the_key_and_the_fix(data: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, presets=load_presets(), skus=load_skus())
    assert words in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"defaultRuntime": "x", "maxAdapters": "-1", "vllmImage": "UPPER"})
    assert len(info.value.problems) == 3
