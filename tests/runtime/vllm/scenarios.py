"""The golden scenarios: every catalog preset on catalog SKUs, single GPU, multi-GPU, multi-node,
and with adapters (``auto``: LoRA where vLLM supports it, merged weights otherwise; and merge mode
for every preset). ``python -m tests.support.goldens --update`` rewrites them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.presets import Preset, load_presets
from api.skus import GpuSku, load_skus
from runtime.vllm.errors import LauncherError
from runtime.vllm.inputs import Hardware, Topology
from runtime.vllm.plan import LaunchRequest, ServedLora, build_plan, choose_adapter_mode

GOLDEN_DIR = Path(__file__).with_name("golden")
WORK = "/tmp/kaito-vllm"
MERGED = "/mnt/adapter/.merged/0123456789abcdef"
"""Where merge mode's weights are (the hash of the inputs, fixed here)."""
ADAPTERS = (("adapter-a", 0.5), ("adapter-b", 0.2))


@dataclass(frozen=True)
class Scenario:
    name: str
    sku: str
    nodes: int = 1
    adapters: bool = False
    model_dir: str | None = None
    adapter_mode: str = "auto"


SCENARIOS = (
    Scenario("single-gpu-Standard_NC6s_v3", "Standard_NC6s_v3"),
    Scenario("single-gpu-Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v4"),
    Scenario("multi-gpu-Standard_NC12s_v3", "Standard_NC12s_v3"),
    Scenario("multi-gpu-Standard_NC96ads_A100_v4", "Standard_NC96ads_A100_v4"),
    Scenario("multi-node-2x-Standard_NC48ads_A100_v4", "Standard_NC48ads_A100_v4", nodes=2),
    Scenario(
        "adapters-Standard_NC24ads_A100_v4",
        "Standard_NC24ads_A100_v4",
        adapters=True,
        model_dir="/workspace/vllm/weights",
    ),
    Scenario(
        "merge-Standard_NC24ads_A100_v4",
        "Standard_NC24ads_A100_v4",
        adapters=True,
        adapter_mode="merge",
    ),
    Scenario(
        "merge-multi-node-2x-Standard_NC48ads_A100_v4",
        "Standard_NC48ads_A100_v4",
        nodes=2,
        adapters=True,
        adapter_mode="merge",
    ),
)


def hardware_of(sku: GpuSku) -> Hardware:
    cc = sku.compute_capability
    major, _, minor = (cc or "").partition(".")
    return Hardware(
        gpus=sku.gpu_count,
        gpu_memory_bytes=sku.gpu_memory_bytes,
        compute_capability=(int(major), int(minor)) if cc else None,
    )


def _request(scenario: Scenario, preset: Preset, ordinal: int) -> LaunchRequest:
    sku = load_skus().get(scenario.sku)
    assert sku is not None
    loras: tuple[ServedLora, ...] = ()
    merged: tuple[tuple[str, float], ...] = ()
    alias = None
    model_dir = scenario.model_dir
    mode = choose_adapter_mode(scenario.adapter_mode, preset, len(ADAPTERS) * scenario.adapters)
    if mode == "lora":
        alias = f"{preset.name}-base"
        loras = (
            ServedLora(preset.name, f"{WORK}/loras/{preset.name}", 24),
            ServedLora("adapter-a", f"{WORK}/loras/adapter-a", 8),
            ServedLora("adapter-b", f"{WORK}/loras/adapter-b", 16),
        )
    elif mode == "merge":
        merged = ADAPTERS
        model_dir = MERGED
    leader = f"workspace-{preset.name}-0.workspace-{preset.name}-headless.default.svc"
    return LaunchRequest(
        preset=preset,
        hardware=hardware_of(sku),
        served_model_name=preset.name,
        topology=Topology(
            node_count=scenario.nodes,
            ordinal=ordinal,
            leader_address=leader if scenario.nodes > 1 else None,
        ),
        model_dir=model_dir,
        base_alias=alias,
        adapter_mode=mode,
        loras=loras,
        merged_adapters=merged,
        host="127.0.0.1",
        port=5001,
        chat_template_path=f"{WORK}/chat_template.jinja" if preset.chat_template else None,
    )


def _plan(request: LaunchRequest) -> dict[str, Any]:
    try:
        return build_plan(request).to_json()
    except LauncherError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def render(scenario: Scenario) -> dict[str, Any]:
    """``{preset: plan or error}`` (``{preset: {"leader": ..., "worker": ...}}`` multi-node)."""
    out: dict[str, Any] = {}
    for preset in load_presets():
        if scenario.nodes > 1:
            out[preset.name] = {
                "leader": _plan(_request(scenario, preset, 0)),
                "worker": _plan(_request(scenario, preset, 1)),
            }
        else:
            out[preset.name] = _plan(_request(scenario, preset, 0))
    return out


def golden_path(scenario: Scenario) -> Path:
    return GOLDEN_DIR / f"{scenario.name}.json"


def golden_text(scenario: Scenario) -> str:
    return json.dumps(render(scenario), indent=2, ensure_ascii=False) + "\n"


def golden_files() -> Iterator[tuple[Path, str]]:
    """Every golden file of this suite and the text it must hold (for ``tests.support.goldens``)."""
    for scenario in SCENARIOS:
        yield golden_path(scenario), golden_text(scenario)
