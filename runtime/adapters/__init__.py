"""LoRA adapters at a strength, exactly: shared by the transformers server and the vLLM launcher.

Typical use in a runtime's start-up::

    specs = adapters_from_args(args.adapters, args.adapter_root)   # --adapter NAME=STRENGTH
    adapters = load_adapters(specs)
    report = merge_into(model, adapters, base_name=model_id)      # transformers: W += Σ s·ΔW
    write_combined(adapters, out_dir)                             # vLLM: one exact LoRA
"""

from runtime.adapters.errors import (
    AdapterArgumentError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    IncompatibleAdapterError,
    MissingTargetModuleError,
    ShapeMismatchError,
    UnsupportedAdapterError,
)
from runtime.adapters.export import (
    WrittenAdapter,
    combined_rank,
    stack_lora,
    write_combined,
    write_scaled,
)
from runtime.adapters.lora import (
    LoraAdapter,
    LoraModule,
    load_adapter,
    load_adapters,
    lora_scaling,
    module_rank_alpha,
)
from runtime.adapters.merge import (
    AdapterSummary,
    BaseWeight,
    BaseWeights,
    MergeReport,
    check_compatible,
    check_same_layout,
    checkpoint_weights,
    merge_into,
    model_weights,
)
from runtime.adapters.spec import (
    DEFAULT_ADAPTER_ROOT,
    AdapterSpec,
    adapters_from_args,
    add_adapter_arguments,
    discover_adapters,
    parse_adapter_arg,
    parse_adapter_args,
    parse_strength,
    resolve_adapters,
)

__all__ = [
    "DEFAULT_ADAPTER_ROOT",
    "AdapterArgumentError",
    "AdapterConfigError",
    "AdapterError",
    "AdapterNotFoundError",
    "AdapterSpec",
    "AdapterSummary",
    "BaseModelMismatchError",
    "BaseWeight",
    "BaseWeights",
    "IncompatibleAdapterError",
    "LoraAdapter",
    "LoraModule",
    "MergeReport",
    "MissingTargetModuleError",
    "ShapeMismatchError",
    "UnsupportedAdapterError",
    "WrittenAdapter",
    "adapters_from_args",
    "add_adapter_arguments",
    "check_compatible",
    "check_same_layout",
    "checkpoint_weights",
    "combined_rank",
    "discover_adapters",
    "load_adapter",
    "load_adapters",
    "lora_scaling",
    "merge_into",
    "model_weights",
    "module_rank_alpha",
    "parse_adapter_arg",
    "parse_adapter_args",
    "parse_strength",
    "resolve_adapters",
    "stack_lora",
    "write_combined",
    "write_scaled",
]
