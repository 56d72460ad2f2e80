"""The server with LoRA adapters merged at their strength (real PEFT adapters, real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from runtime.server.loader import LoadedModel
from tests.runtime.harness import RunningServer, make_settings, start_server
from tests.support.tiny_adapters import build_tiny_gpt2, make_lora_adapter

PROMPT = "The Kaito controller adds an init container for each adapter"
GREEDY = {"do_sample": False, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def adapter_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("mnt-adapter")
    make_lora_adapter(tiny_model, root / "falcon-7b-adapter", r=4, lora_alpha=8, seed=1, std=0.3)
    make_lora_adapter(
        tiny_model,
        root / "style",
        r=2,
        lora_alpha=4,
        target_modules=("o_proj", "up_proj", "v_proj"),
        seed=2,
        std=0.3,
    )
    gpt2 = build_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")
    make_lora_adapter(gpt2, root / "for-gpt2", target_modules=("c_attn",), fan_in_fan_out=True)
    return root


def formula_model(base: Path, root: Path, strengths: dict[str, float]) -> Any:
    """The base model with ``W + Σ s · (alpha / r) · B @ A`` computed here, from the files."""
    import json

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, strength in strengths.items():
            config = json.loads((root / name / "adapter_config.json").read_text())
            tensors = load_file(root / name / "adapter_model.safetensors")
            scaling = config["lora_alpha"] / config["r"]
            for key, a in tensors.items():
                if ".lora_A." not in key:
                    continue
                b = tensors[key.replace(".lora_A.", ".lora_B.")]
                module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                params[module + ".weight"] += strength * scaling * (b.float() @ a.float())
    return model


def generate(model: Any, loaded: LoadedModel) -> str:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pad_token_id=loaded.limits.pad_token_id,
            **GREEDY,
        )
    return PROMPT + str(loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def serve(tiny_model: Path, root: Path, *adapters: str) -> RunningServer:
    running = start_server(make_settings(tiny_model, adapter=adapters, adapter_root=root))
    running.wait_ready()
    return running


@pytest.fixture
def serving(
    tiny_model: Path, adapter_root: Path, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    running = serve(tiny_model, adapter_root, *request.param)
    yield running
    running.stop()


def chat(running: RunningServer) -> str:
    with httpx.Client(base_url=running.url, timeout=120) as client:
        response = client.post("/chat", json={"prompt": PROMPT, "generate_kwargs": GREEDY})
    assert response.status_code == 200, response.text
    return str(response.json()["Result"])


def assert_weights(running: RunningServer, expected: Any) -> None:
    assert running.state.loaded is not None
    served = dict(running.state.loaded.model.named_parameters())
    for name, param in expected.named_parameters():
        torch.testing.assert_close(served[name], param, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("serving", "strengths"),
    [
        (("falcon-7b-adapter=0.2",), {"falcon-7b-adapter": 0.2}),
        (("falcon-7b-adapter=1.5", "style=0.6"), {"falcon-7b-adapter": 1.5, "style": 0.6}),
    ],
    indirect=["serving"],
    ids=["one", "two"],
)
def test_adapters_merged_at_their_strength(
    serving: RunningServer,
    strengths: dict[str, float],
    tiny_model: Path,
    adapter_root: Path,
    loaded_tiny: LoadedModel,
) -> None:
    expected = formula_model(tiny_model, adapter_root, strengths)
    assert_weights(serving, expected)
    answer = chat(serving)
    assert answer == generate(expected, loaded_tiny)
    base = formula_model(tiny_model, adapter_root, {})
    assert answer != generate(base, loaded_tiny)  # the adapters do change the model
    assert serving.state.loaded is not None
    assert [line.split(" at ")[0] for line in serving.state.loaded.adapters] == list(strengths)


@pytest.mark.parametrize("serving", [("falcon-7b-adapter=0",)], indirect=True)
def test_strength_zero_is_the_base_model(
    serving: RunningServer, tiny_model: Path, adapter_root: Path, loaded_tiny: LoadedModel
) -> None:
    base = formula_model(tiny_model, adapter_root, {})
    for name, param in base.named_parameters():
        assert torch.equal(dict(serving.state.loaded.model.named_parameters())[name], param)  # type: ignore[union-attr]
    assert chat(serving) == generate(base, loaded_tiny)


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        (("for-gpt2=0.5",), "for-gpt2"),
        (("missing=0.5",), "missing"),
    ],
)
def test_an_adapter_that_does_not_fit_stops_the_start(
    tiny_model: Path, adapter_root: Path, adapters: tuple[str, ...], message: str
) -> None:
    running = start_server(make_settings(tiny_model, adapter=adapters, adapter_root=adapter_root))
    try:
        with pytest.raises(RuntimeError, match=message):
            running.wait_ready()
        with httpx.Client(base_url=running.url, timeout=30) as client:
            health = client.get("/health")
        assert health.status_code == 503
        assert message in health.json()["detail"]
    finally:
        running.stop()
