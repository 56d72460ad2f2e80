"""Adapter strength on vLLM, exactly: the LoRA folders written at start-up.

vLLM applies LoRA at run time and has no notion of strength. At start-up the launcher writes:

* ``<work>/loras/<model name>``: ONE combined LoRA whose delta is Σ s_i · scaling_i · B_i @ A_i
  over every adapter with a non-zero strength (``runtime.adapters.write_combined``: A blocks
  stacked, B blocks scaled and concatenated, scaling 1). It is served under the Workspace's
  model name, so a request naming the model gets base + Σ s_i·ΔW_i, the seed's semantics.
* ``<work>/loras/<adapter name>``: each adapter with its own strength baked into B
  (``write_scaled``), served under the adapter's name.

The base model stays reachable under an alias (``<model name>-base`` by default). With no
adapter, or all strengths 0, there is no combined LoRA and the base is served under the model
name itself (no LoRA cost on the default path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.adapters import (
    AdapterSpec,
    BaseWeights,
    check_compatible,
    check_same_layout,
    load_adapters,
    write_combined,
    write_scaled,
)
from runtime.vllm.errors import SettingsError
from runtime.vllm.plan import ServedLora


@dataclass(frozen=True)
class LoraLayout:
    """The LoRA modules to serve and the base model's alias (None: the base keeps the name)."""

    loras: tuple[ServedLora, ...]
    base_alias: str | None
    notes: tuple[str, ...]


def default_base_alias(model_name: str) -> str:
    return f"{model_name}-base"


def check_names(adapter_names: Sequence[str], model_name: str, base_alias: str | None) -> None:
    """Adapter names must differ from the served model's name and its base alias."""
    alias = base_alias or default_base_alias(model_name)
    for name in adapter_names:
        if name in (model_name, alias):
            raise SettingsError(
                f"adapter {name!r} has the name of the served model or of its base alias "
                f"({model_name!r}, {alias!r}); rename the adapter or pass another "
                "--served-model-name / --base-alias"
            )


def prepare_loras(
    specs: Sequence[AdapterSpec],
    *,
    model_name: str,
    work_dir: Path,
    base_alias: str | None = None,
    base_weights: BaseWeights | None = None,
    base_name: str | None = None,
    strict_base_name: bool = False,
) -> LoraLayout:
    """Load and check the adapters, write the combined and scaled LoRAs, and name them.

    ``base_weights`` (from ``checkpoint_weights`` of a local model folder) enables the shape
    check; without it only the adapters' agreement with each other is checked.
    """
    if not specs:
        return LoraLayout((), None, ())
    check_names([s.name for s in specs], model_name, base_alias)
    alias_name = base_alias or default_base_alias(model_name)
    adapters = load_adapters(specs)
    notes: list[str] = []
    if base_weights:
        notes += check_compatible(
            adapters, base_weights, base_name=base_name, strict_base_name=strict_base_name
        )
    else:
        check_same_layout(adapters)
        notes.append(
            "adapters were not checked against the base model's shapes (its weights are not in "
            "a local folder); vLLM checks them when it loads the LoRAs"
        )
    root = work_dir / "loras"
    loras: list[ServedLora] = []
    alias = None
    active = [a for a in adapters if a.strength != 0.0]
    if active:
        combined = write_combined(active, root / model_name, base_model_name_or_path=base_name)
        loras.append(ServedLora(model_name, str(combined.path), combined.rank))
        alias = alias_name
    for adapter in adapters:
        scaled = write_scaled(adapter, root / adapter.name, base_model_name_or_path=base_name)
        loras.append(ServedLora(adapter.name, str(scaled.path), scaled.rank))
    return LoraLayout(tuple(loras), alias, tuple(notes))
