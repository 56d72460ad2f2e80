"""The inference container's command, one pure function per runtime.

The reconciler does not import ``runtime``: it renders the command line the runtime's CLI
accepts. Changing a flag is a one-place edit here plus regenerated golden files
(``python -m tests.reconciler.goldens --update``).

* transformers: ``python -m runtime.server`` (``/chat`` and the OpenAI API). It takes the model
  (Hugging Face id at the preset's pinned revision), dtype, context length and chat template
  from the reconciler, and splits the layers over every GPU of its node.
* vLLM: ``python -m runtime.vllm``, the launcher. It reads the preset from the same catalog
  (``--preset``) and derives tensor/pipeline parallelism with the same estimator as the
  reconciler; on several nodes it learns its rank from ``POD_INDEX`` (downward API) and reaches
  the rank-0 Pod through the headless Service.

A private preset image (``accessMode: private`` + ``presetOptions.image``) carries the model's
Hugging Face folder at ``PRIVATE_WEIGHTS_DIR`` (``/workspace/weights``): both runtimes are
pointed there (``--model`` / ``--model-dir``) and run offline (``HF_HUB_OFFLINE=1`` in the
container's environment, no ``--allow-download``); a runtime whose folder is missing refuses to
start with exit status 3 and says so in the Pod's termination message.

Both serve HTTP on port 5000 with ``/health``, read adapters from ``--adapter-root`` (one folder
per adapter, copied there by the adapter init containers) and take one ``--adapter
NAME=STRENGTH`` per adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.labels import ADAPTER_DIR, RUNTIME_PORT

POD_INDEX_ENV = "POD_INDEX"
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
PRIVATE_WEIGHTS_DIR = "/workspace/weights"
"""Where a private preset image holds the model's Hugging Face folder (the convention)."""
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1"}
"""The environment that keeps the Hugging Face libraries off the network (private images)."""


@dataclass(frozen=True)
class ServeArgs:
    """What the runtimes need to know, from the preset and the sizing."""

    preset: str
    """The preset's name, also the served model name."""
    model: str
    """Hugging Face repo id."""
    revision: str
    dtype: str | None = None
    max_model_len: int | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None
    """Jinja text, passed inline (the catalog's template for tokenizers without one)."""
    download: bool = True
    """False for a private image that carries the weights (no hub access at start)."""
    model_dir: str | None = None
    """The weights' folder inside a private preset image; set: served from there, offline."""
    adapters: Sequence[tuple[str, str]] = ()
    """(name, strength) in the Workspace's order."""
    port: int = RUNTIME_PORT
    adapter_root: str = ADAPTER_DIR
    nodes: int = 1
    headless_service: str | None = None
    leader_address: str | None = None
    """DNS name of the rank-0 Pod (multi-node only)."""
    cpu_kv_cache_gib: int | None = None
    """Set on a CPU instance type (``api.cpu``): the runtimes run on CPU (``--device cpu``);
    the vLLM launcher gets this KV-cache budget (``--cpu-kv-cache-gib``)."""


def _adapters(args: ServeArgs) -> list[str]:
    if not args.adapters:
        return []
    out = ["--adapter-root", args.adapter_root]
    for name, strength in args.adapters:
        out += ["--adapter", f"{name}={strength}"]
    return out


def transformers_command(args: ServeArgs) -> list[str]:
    """``python -m runtime.server ...`` for the transformers runtime (one node)."""
    out = [
        "python",
        "-m",
        "runtime.server",
        *(
            ["--model", args.model_dir]
            if args.model_dir
            else ["--model", args.model, "--revision", args.revision]
        ),
        "--served-model-name",
        args.preset,
        "--port",
        str(args.port),
    ]
    if args.cpu_kv_cache_gib is not None:
        out += ["--device", "cpu"]
    if args.dtype:
        out += ["--dtype", args.dtype]
    if args.max_model_len:
        out += ["--max-model-len", str(args.max_model_len)]
    if args.trust_remote_code:
        out.append("--trust-remote-code")
    if args.download and not args.model_dir:
        out.append("--allow-download")
    if args.chat_template:
        out += ["--chat-template", args.chat_template]
    return out + _adapters(args)


def vllm_command(args: ServeArgs) -> list[str]:
    """``python -m runtime.vllm ...`` for the vLLM launcher (one or more nodes)."""
    out = [
        "python",
        "-m",
        "runtime.vllm",
        "--preset",
        args.preset,
        "--served-model-name",
        args.preset,
        "--port",
        str(args.port),
    ]
    if args.model_dir:
        out += ["--model-dir", args.model_dir]
    if args.cpu_kv_cache_gib is not None:
        out += ["--device", "cpu", "--cpu-kv-cache-gib", str(args.cpu_kv_cache_gib)]
    if args.nodes > 1:
        out += ["--node-count", str(args.nodes)]
        if args.headless_service:
            out += ["--headless-service", args.headless_service]
        if args.leader_address:
            out += ["--leader-address", args.leader_address]
    return out + _adapters(args)
