"""Checking adapters against a base model and merging them into its weights at their strengths.

``merge_into`` adds ``Σ s_i · scaling_i · B_i @ A_i`` to every targeted weight in place, computed
in float32 and cast back to the weight's dtype once. It checks every adapter before it changes
anything, so a mismatch leaves the model as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from runtime.adapters.errors import (
    AdapterConfigError,
    BaseModelMismatchError,
    IncompatibleAdapterError,
    MissingTargetModuleError,
    ShapeMismatchError,
    UnsupportedAdapterError,
)
from runtime.adapters.lora import LoraAdapter


@dataclass(frozen=True)
class BaseWeight:
    """What the compatibility check needs to know about one base-model weight."""

    shape: tuple[int, ...]
    transposed: bool | None = None
    """True for (in, out) weights such as GPT-2's Conv1D, False for nn.Linear, None if unknown."""


BaseWeights = Mapping[str, BaseWeight]
"""Base-model weights by module name (``model.layers.0.self_attn.q_proj``)."""


def model_weights(model: torch.nn.Module) -> dict[str, BaseWeight]:
    """The 2-D weights of ``model``'s modules (Linear, Conv1D, Embedding, ...), by module name."""
    weights: dict[str, BaseWeight] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            if isinstance(module, torch.nn.Linear):
                transposed: bool | None = False
            elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
                transposed = True
            else:
                transposed = None
            weights[name] = BaseWeight(shape=tuple(weight.shape), transposed=transposed)
    return weights


def checkpoint_weights(model_dir: Path) -> dict[str, BaseWeight]:
    """The 2-D ``*.weight`` tensors of a safetensors checkpoint, read from headers only.

    Lets the vLLM launcher check adapters before vLLM loads anything. Empty when the directory
    holds no safetensors files (the check is then skipped by the caller).
    """
    weights: dict[str, BaseWeight] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                if not key.endswith(".weight"):
                    continue
                shape = tuple(handle.get_slice(key).get_shape())
                if len(shape) == 2:
                    weights[key.removesuffix(".weight")] = BaseWeight(shape=shape)
    return weights


def _hint(adapter: LoraAdapter) -> str:
    base = adapter.base_model_name_or_path
    return f" (it was trained on base model {base!r})" if base else ""


def _comparable_name(name: str) -> str | None:
    """A hub id (``org/model``) in lower case; None for a local path, which says nothing."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None
    return name.lower()


def check_compatible(
    adapters: Sequence[LoraAdapter],
    base: BaseWeights,
    *,
    base_name: str | None = None,
    strict_base_name: bool = False,
) -> list[str]:
    """Raise an ``IncompatibleAdapterError`` naming the adapter and the mismatch, else warn.

    Structural checks decide: every targeted module exists in ``base`` with the right shape and
    layout. ``base_name`` (the served model's hub id) is compared with each adapter's
    ``base_model_name_or_path`` when both are hub ids; a difference is returned as a warning,
    or raised as ``BaseModelMismatchError`` when ``strict_base_name``. Local paths (what a
    KAITO tuning job records) are not compared.
    """
    warnings: list[str] = []
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in base})
    for adapter in adapters:
        missing = sorted(set(adapter.modules) - set(base))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MissingTargetModuleError(
                f"adapter {adapter.name!r} targets {len(missing)} module(s) the base model "
                f"does not have: {shown}{more}{_hint(adapter)}; the base model's layers "
                f"are named {', '.join(suffixes) or '(none found)'}: use an adapter trained "
                "for this base model",
                adapter=adapter.name,
            )
        for module in adapter.modules.values():
            weight = base[module.name]
            if weight.transposed is not None and weight.transposed != module.fan_in_fan_out:
                raise IncompatibleAdapterError(
                    f"adapter {adapter.name!r}: module {module.name!r} has fan_in_fan_out="
                    f"{module.fan_in_fan_out} but the base layer stores its weight "
                    f"{'(in, out)' if weight.transposed else '(out, in)'}{_hint(adapter)}; use "
                    "an adapter trained for this base model",
                    adapter=adapter.name,
                )
            if tuple(weight.shape) != module.weight_shape:
                raise ShapeMismatchError(
                    f"adapter {adapter.name!r}: module {module.name!r} has a delta of shape "
                    f"{module.weight_shape} but the base weight is {tuple(weight.shape)}"
                    f"{_hint(adapter)}; use an adapter trained for this base model (same "
                    "architecture and size)",
                    adapter=adapter.name,
                )
        trained = adapter.base_model_name_or_path
        want = _comparable_name(base_name) if base_name else None
        got = _comparable_name(trained) if trained else None
        if want and got and want != got:
            message = (
                f"adapter {adapter.name!r} was trained on {trained!r} but the served model is "
                f"{base_name!r}; the shapes match, so it is applied, but check that it belongs "
                "to this model"
            )
            if strict_base_name:
                raise BaseModelMismatchError(message, adapter=adapter.name)
            warnings.append(message)
    return warnings


def check_same_layout(adapters: Sequence[LoraAdapter]) -> None:
    """Adapters combined into one must agree on each module's shape and orientation."""
    seen: dict[str, tuple[str, tuple[int, int], bool]] = {}
    for adapter in adapters:
        for module in adapter.modules.values():
            first = seen.setdefault(
                module.name, (adapter.name, module.weight_shape, module.fan_in_fan_out)
            )
            if first[1:] != (module.weight_shape, module.fan_in_fan_out):
                raise IncompatibleAdapterError(
                    f"adapters {first[0]!r} and {adapter.name!r} disagree on module "
                    f"{module.name!r}: shape {first[1]} (fan_in_fan_out={first[2]}) versus "
                    f"{module.weight_shape} (fan_in_fan_out={module.fan_in_fan_out}); they were "
                    "trained for different base models",
                    adapter=adapter.name,
                )


@dataclass(frozen=True)
class AdapterSummary:
    """One adapter as merged: what a startup log line shows."""

    name: str
    strength: float
    modules: int
    ranks: tuple[int, ...]
    scalings: tuple[float, ...]


@dataclass(frozen=True)
class MergeReport:
    """What ``merge_into`` did."""

    adapters: tuple[AdapterSummary, ...]
    modules_changed: int
    warnings: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "adapters": [vars(a) for a in self.adapters],
                "modules_changed": self.modules_changed,
                "warnings": list(self.warnings),
            }
        )


def summarize(adapter: LoraAdapter) -> AdapterSummary:
    mods = adapter.modules.values()
    return AdapterSummary(
        name=adapter.name,
        strength=adapter.strength,
        modules=len(adapter.modules),
        ranks=tuple(sorted({m.rank for m in mods})),
        scalings=tuple(sorted({m.scaling for m in mods})),
    )


def _tied_names(model: torch.nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return names


def merge_into(
    model: torch.nn.Module,
    adapters: Sequence[LoraAdapter],
    *,
    base_name: str | None = None,
    strict_base_name: bool = False,
) -> MergeReport:
    """Add ``Σ s_i · scaling_i · B_i @ A_i`` to ``model``'s weights in place.

    The sum is computed in float32 on each weight's device and cast back to the weight's dtype
    once. Adapters at strength 0 change nothing. Every check runs before the first write.
    """
    names = [a.name for a in adapters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IncompatibleAdapterError(
            f"adapter {duplicates[0]!r} is given more than once; merge each adapter once",
            adapter=duplicates[0],
        )
    warnings = check_compatible(
        adapters, model_weights(model), base_name=base_name, strict_base_name=strict_base_name
    )
    active = [a for a in adapters if a.strength != 0.0]
    targets: dict[str, list[LoraAdapter]] = {}
    for adapter in active:
        for module in adapter.modules:
            targets.setdefault(module, []).append(adapter)
    tied = _tied_names(model)
    weights: dict[str, torch.nn.Parameter] = {}
    for module_name, users in targets.items():
        weight = model.get_submodule(module_name).weight
        assert isinstance(weight, torch.nn.Parameter)
        sharing = tied[id(weight)]
        if len(sharing) > 1:
            raise UnsupportedAdapterError(
                f"adapter {users[0].name!r} targets {module_name!r}, whose weight is shared with "
                f"{', '.join(n for n in sharing if n != module_name + '.weight')} (tied "
                "embeddings); merging would change both: retrain without that module",
                adapter=users[0].name,
            )
        if not weight.is_floating_point():
            raise AdapterConfigError(
                f"adapter {users[0].name!r} targets {module_name!r}, whose weight is "
                f"{weight.dtype} (quantised); merge into an unquantised model",
                adapter=users[0].name,
            )
        weights[module_name] = weight
    with torch.no_grad():
        for module_name, users in targets.items():
            weight = weights[module_name]
            total = weight.detach().to(torch.float32)
            for adapter in users:
                total = total + adapter.modules[module_name].delta(
                    adapter.strength, device=weight.device
                )
            weight.copy_(total.to(weight.dtype))
    return MergeReport(
        adapters=tuple(summarize(a) for a in adapters),
        modules_changed=len(targets),
        warnings=tuple(warnings),
    )
