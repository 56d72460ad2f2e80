"""Reading a PEFT LoRA adapter: its config, its A/B matrices, and each module's scaling.

A PEFT LoRA layer adds ``scaling · B @ A`` to its base weight, with ``scaling = alpha / r`` (or
``alpha / sqrt(r)`` with ``use_rslora``); ``rank_pattern`` / ``alpha_pattern`` override ``r`` and
``alpha`` for the modules they match (PEFT's ``get_pattern_key`` rule: a key matches a module name
that ends with it at a ``.`` boundary; the first match wins). ``fan_in_fan_out`` (GPT-2's Conv1D
layers, whose weight is stored (in, out)) transposes the delta.

Adapters that are not such a plain low-rank delta are refused with the reason and the fix: DoRA,
``modules_to_save``, embedding targets, trained biases, and PEFT variants that change the forward
pass or the base weights (see ``UNSUPPORTED_FEATURES``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from runtime.adapters.errors import AdapterConfigError, UnsupportedAdapterError
from runtime.adapters.spec import CONFIG_FILE, AdapterSpec, check_adapter_dir

PEFT_PREFIX = "base_model.model."
"""The prefix PEFT's ``save_pretrained`` puts before every module name."""

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")

# init_lora_weights values that only set the starting point of training: the saved adapter is a
# plain LoRA on the unmodified base (the same list vLLM accepts). PiSSA, OLoRA, CorDA and LoftQ
# rewrite the base weights instead.
_PLAIN_INITS = frozenset({"gaussian", "eva", "orthogonal", "mica", "lora_ga"})

UNSUPPORTED_FEATURES: Mapping[str, str] = {
    "use_dora": "DoRA (use_dora) rescales every column of the merged weight by a learned "
    "magnitude, so its effect is not a low-rank delta that a strength can scale; retrain "
    "without use_dora, or merge it into a full model with PEFT's merge_and_unload and serve "
    "that model instead",
    "modules_to_save": "modules_to_save replaces whole modules ({value}) instead of adding a "
    "low-rank delta, and a strength cannot scale a replaced module; retrain without "
    "modules_to_save",
    "lora_bias": "lora_bias trains a bias on lora_B, which is not a low-rank delta; retrain "
    "with lora_bias false",
    "bias": "bias={value!r} trains the base model's biases, which a strength cannot scale; "
    "retrain with bias 'none'",
    "alora_invocation_tokens": "Activated LoRA (alora_invocation_tokens) only applies after "
    "its invocation tokens, so it cannot be merged into the weights; retrain as a plain LoRA",
    "layer_replication": "layer_replication changes the base model's layers; retrain without it",
    "use_bdlora": "block-diagonal LoRA (use_bdlora) is not a plain low-rank delta; retrain "
    "without it",
    "use_qalora": "QALoRA (use_qalora) pools the input before lora_A; retrain without it",
    "target_parameters": "LoRA on raw parameters (target_parameters={value}) is not supported; "
    "target modules with target_modules instead",
    "trainable_token_indices": "trainable_token_indices trains embedding rows, which a strength "
    "cannot scale; retrain without it",
    "megatron_config": "Megatron-sharded LoRA layers (megatron_config) are not supported; save "
    "the adapter from an unsharded model",
    "arrow_config": "Arrow routing (arrow_config) mixes adapters per token; use each adapter "
    "on its own",
    "kasa_config": "KaSA (kasa_config) is not a plain low-rank delta; retrain as a plain LoRA",
    "monteclora_config": "MonteCLoRA (monteclora_config) is not a plain low-rank delta; retrain "
    "as a plain LoRA",
}


def _is_set(key: str, value: Any) -> bool:
    if key == "bias":
        return value not in (None, "none")
    return value not in (None, False, [], {}, "")


@dataclass(frozen=True)
class LoraModule:
    """One LoRA layer: ``delta = scaling · B @ A`` (transposed when ``fan_in_fan_out``)."""

    name: str
    """The module's name in the base model, for example ``model.layers.0.self_attn.q_proj``."""
    lora_a: torch.Tensor
    """A: (rank, in_features)."""
    lora_b: torch.Tensor
    """B: (out_features, rank)."""
    alpha: float
    scaling: float
    fan_in_fan_out: bool

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.lora_a.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.lora_b.shape[0])

    @property
    def weight_shape(self) -> tuple[int, int]:
        """The shape of the base weight this delta is added to."""
        if self.fan_in_fan_out:
            return (self.in_features, self.out_features)
        return (self.out_features, self.in_features)

    def delta(
        self, strength: float = 1.0, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``strength · scaling · B @ A`` in float32, in the base weight's layout."""
        a = self.lora_a.to(device=device, dtype=torch.float32)
        b = self.lora_b.to(device=device, dtype=torch.float32)
        delta = (b @ a) * (strength * self.scaling)
        return delta.T if self.fan_in_fan_out else delta


@dataclass(frozen=True)
class LoraAdapter:
    """A loaded PEFT LoRA adapter at a strength."""

    name: str
    path: Path
    strength: float
    config: Mapping[str, Any]
    """The adapter's ``adapter_config.json`` as read."""
    modules: Mapping[str, LoraModule]
    """Its LoRA layers by module name (the base model's ``named_modules`` names)."""

    @property
    def base_model_name_or_path(self) -> str | None:
        value = self.config.get("base_model_name_or_path")
        return str(value) if value else None

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    @property
    def max_rank(self) -> int:
        return max(m.rank for m in self.modules.values())

    def with_strength(self, strength: float) -> LoraAdapter:
        return replace(self, strength=float(strength))


def read_adapter_config(name: str, path: Path) -> dict[str, Any]:
    """Read and minimally check ``adapter_config.json``."""
    file = path / CONFIG_FILE
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterConfigError(
            f"adapter {name!r}: cannot read {file}: {exc}; it must be the JSON that PEFT's "
            "save_pretrained writes",
            adapter=name,
        ) from None
    if not isinstance(config, dict):
        raise AdapterConfigError(
            f"adapter {name!r}: {file} holds {type(config).__name__}, not a JSON object",
            adapter=name,
        )
    return config


def check_supported(name: str, config: Mapping[str, Any]) -> None:
    """Refuse configs that are not a plain LoRA (pure: looks at the config only)."""
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapterError(
            f"adapter {name!r}: peft_type is {config.get('peft_type')!r}; only LoRA adapters "
            "(peft_type 'LORA') can be merged at a strength",
            adapter=name,
        )
    for key, reason in UNSUPPORTED_FEATURES.items():
        value = config.get(key)
        if _is_set(key, value):
            raise UnsupportedAdapterError(
                f"adapter {name!r}: {reason.format(value=value)}", adapter=name
            )
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_INITS:
        raise UnsupportedAdapterError(
            f"adapter {name!r}: init_lora_weights={init!r} rewrites the base model's weights "
            "when PEFT loads the adapter, so it is not a delta on the served model; convert it "
            "with save_pretrained(..., path_initial_model_for_weight_conversion=...) to a plain "
            "LoRA",
            adapter=name,
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise AdapterConfigError(
                f"adapter {name!r}: {key}={value!r} in {CONFIG_FILE} must be a positive number",
                adapter=name,
            )


def _match_pattern(pattern: Mapping[str, Any], module: str) -> Any | None:
    # PEFT's get_pattern_key: the first key that matches the end of the name at a "." boundary.
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def module_rank_alpha(config: Mapping[str, Any], module: str) -> tuple[int, float]:
    """The ``(r, alpha)`` PEFT uses for ``module``, after ``rank_pattern`` / ``alpha_pattern``."""
    rank = _match_pattern(config.get("rank_pattern") or {}, module)
    alpha = _match_pattern(config.get("alpha_pattern") or {}, module)
    return (
        int(config["r"] if rank is None else rank),
        float(config["lora_alpha"] if alpha is None else alpha),
    )


def lora_scaling(rank: int, alpha: float, *, use_rslora: bool) -> float:
    """``alpha / r``, or ``alpha / sqrt(r)`` for rank-stabilised LoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def _load_tensors(name: str, path: Path) -> dict[str, torch.Tensor]:
    safetensors_file = path / "adapter_model.safetensors"
    try:
        if safetensors_file.is_file():
            tensors: dict[str, torch.Tensor] = load_file(str(safetensors_file), device="cpu")
            return tensors
        loaded = torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdapterConfigError(
            f"adapter {name!r}: cannot read its weights in {path}: {exc}", adapter=name
        ) from None
    if not isinstance(loaded, dict):
        raise AdapterConfigError(
            f"adapter {name!r}: adapter_model.bin in {path} is not a state dict", adapter=name
        )
    return {str(k): v for k, v in loaded.items()}


def _unsupported_tensor(name: str, key: str) -> UnsupportedAdapterError:
    if "lora_embedding_" in key:
        module = key.split(".lora_embedding_", maxsplit=1)[0].removeprefix(PEFT_PREFIX)
        reason = (
            f"targets the embedding {module!r}; LoRA on embedding layers is not supported "
            "(vLLM cannot serve it either): retrain without embedding layers in target_modules"
        )
    elif "lora_magnitude_vector" in key:
        reason = "is a DoRA adapter (it has lora_magnitude_vector); retrain without use_dora"
    elif "modules_to_save" in key:
        reason = f"saves whole modules ({key}); retrain without modules_to_save"
    else:
        reason = (
            f"holds tensor {key!r}, which is not a LoRA A or B matrix (a trained bias, a "
            "saved module or another PEFT method); only plain LoRA adapters are supported"
        )
    return UnsupportedAdapterError(f"adapter {name!r} {reason}", adapter=name)


def parse_lora_tensors(
    name: str, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> dict[str, LoraModule]:
    """Group ``...<module>.lora_A.weight`` / ``lora_B.weight`` tensors into ``LoraModule``s."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise _unsupported_tensor(name, key)
        module = match["module"].removeprefix(PEFT_PREFIX)
        pairs.setdefault(module, {})[match["which"]] = tensor
    if not pairs:
        raise AdapterConfigError(f"adapter {name!r}: its weights file holds no LoRA tensors")
    use_rslora = bool(config.get("use_rslora", False))
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    modules: dict[str, LoraModule] = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise AdapterConfigError(
                f"adapter {name!r}: module {module!r} has no {missing} weight; the weights file "
                "is incomplete",
                adapter=name,
            )
        a, b = pair["A"], pair["B"]
        if a.dim() != 2 or b.dim() != 2:
            raise UnsupportedAdapterError(
                f"adapter {name!r}: module {module!r} has {a.dim()}-D LoRA weights (a "
                "convolution layer); only linear layers are supported",
                adapter=name,
            )
        if not (a.is_floating_point() and b.is_floating_point()):
            raise AdapterConfigError(
                f"adapter {name!r}: module {module!r} has non-float LoRA weights ({a.dtype})",
                adapter=name,
            )
        rank, alpha = module_rank_alpha(config, module)
        if a.shape[0] != rank or b.shape[1] != rank:
            raise AdapterConfigError(
                f"adapter {name!r}: module {module!r} has lora_A {tuple(a.shape)} and lora_B "
                f"{tuple(b.shape)} but {CONFIG_FILE} gives it rank {rank} (r / rank_pattern); "
                "the config and the weights do not belong together",
                adapter=name,
            )
        modules[module] = LoraModule(
            name=module,
            lora_a=a,
            lora_b=b,
            alpha=alpha,
            scaling=lora_scaling(rank, alpha, use_rslora=use_rslora),
            fan_in_fan_out=fan_in_fan_out,
        )
    return modules


def load_adapter(spec: AdapterSpec) -> LoraAdapter:
    """Read, check and load one adapter's config and tensors (CPU, their stored dtype)."""
    check_adapter_dir(spec.name, spec.path)
    config = read_adapter_config(spec.name, spec.path)
    check_supported(spec.name, config)
    modules = parse_lora_tensors(spec.name, config, _load_tensors(spec.name, spec.path))
    return LoraAdapter(
        name=spec.name, path=spec.path, strength=spec.strength, config=config, modules=modules
    )


def load_adapters(specs: Sequence[AdapterSpec]) -> list[LoraAdapter]:
    """``load_adapter`` for each spec, in order."""
    return [load_adapter(spec) for spec in specs]
