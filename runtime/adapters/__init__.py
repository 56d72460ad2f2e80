"""LoRA adapters at a strength, exactly: shared by the transformers server and the vLLM launcher.

Typical use in a runtime's start-up::

    specs = adapters_from_args(args.adapters, args.adapter_root)   # --adapter NAME=STRENGTH
    adapters = load_adapters(specs)
    report = merge_into(model, adapters, base_name=model_id)      # transformers: W += Σ s·ΔW
    write_combined(adapters, out_dir)                             # vLLM: one exact LoRA
    merge_checkpoint(model_dir, adapters, out_dir)                # vLLM without LoRA: a merged copy
"""

from runtime.adapters.checkpoint import (
    MARKER_FILE,
    MergedCheckpoint,
    adapter_digest,
    checkpoint_id,
    checkpoint_shards,
    merge_checkpoint,
    merge_fingerprint,
    merged_name,
    read_merged,
)
from runtime.adapters.errors import (
    AdapterArgumentError,
    AdapterConfigError,
    AdapterError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    CheckpointError,
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
    "MARKER_FILE",
    "AdapterArgumentError",
    "AdapterConfigError",
    "AdapterError",
    "AdapterNotFoundError",
    "AdapterSpec",
    "AdapterSummary",
    "BaseModelMismatchError",
    "BaseWeight",
    "BaseWeights",
    "CheckpointError",
    "IncompatibleAdapterError",
    "LoraAdapter",
    "LoraModule",
    "MergeReport",
    "MergedCheckpoint",
    "MissingTargetModuleError",
    "ShapeMismatchError",
    "UnsupportedAdapterError",
    "WrittenAdapter",
    "adapter_digest",
    "adapters_from_args",
    "add_adapter_arguments",
    "check_compatible",
    "check_same_layout",
    "checkpoint_id",
    "checkpoint_shards",
    "checkpoint_weights",
    "combined_rank",
    "discover_adapters",
    "load_adapter",
    "load_adapters",
    "lora_scaling",
    "merge_checkpoint",
    "merge_fingerprint",
    "merge_into",
    "merged_name",
    "model_weights",
    "module_rank_alpha",
    "parse_adapter_arg",
    "parse_adapter_args",
    "parse_strength",
    "read_merged",
    "resolve_adapters",
    "stack_lora",
    "write_combined",
    "write_scaled",
]
