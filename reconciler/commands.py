"""The inference container's command, one pure function per runtime.

The reconciler does not import ``runtime``: it renders the command line the runtime's CLI
accepts. Changing a flag is a one-place edit here plus regenerated golden files
(``python -m tests.reconciler.goldens --update``).

* transformers: ``python -m runtime.server`` (the `/chat` + OpenAI server; splits the layers over
  all GPUs of the node, so it takes no parallelism flags).
* vLLM: ``python -m runtime.vllm`` (the launcher), with tensor and pipeline parallel sizes and,
  on more than one node, the node count, this Pod's rank (``$(POD_INDEX)``, which Kubernetes
  expands from the container's environment) and the leader's stable DNS name.

Both serve HTTP on port 5000 with ``/health``, read adapters from ``--adapter-root`` (one folder
per adapter, copied there by the adapter init containers) and take one ``--adapter
NAME=STRENGTH`` per adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.labels import ADAPTER_DIR, RUNTIME_PORT

POD_INDEX_ENV = "POD_INDEX"


@dataclass(frozen=True)
class ServeArgs:
    """What both runtimes need to know, from the preset and the sizing."""

    model: str
    """Hugging Face repo id (or a path inside a private image)."""
    revision: str
    served_model_name: str
    dtype: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_model_len: int | None = None
    trust_remote_code: bool = False
    adapters: Sequence[tuple[str, str]] = ()
    """(name, strength) in the Workspace's order."""
    port: int = RUNTIME_PORT
    adapter_root: str = ADAPTER_DIR
    nodes: int = 1
    leader_address: str | None = None
    """DNS name of the rank-0 Pod (multi-node only)."""


def _common(args: ServeArgs) -> list[str]:
    out = [
        "--model",
        args.model,
        "--revision",
        args.revision,
        "--served-model-name",
        args.served_model_name,
        "--port",
        str(args.port),
    ]
    if args.dtype:
        out += ["--dtype", args.dtype]
    if args.trust_remote_code:
        out.append("--trust-remote-code")
    return out


def _adapters(args: ServeArgs) -> list[str]:
    if not args.adapters:
        return []
    out = ["--adapter-root", args.adapter_root]
    for name, strength in args.adapters:
        out += ["--adapter", f"{name}={strength}"]
    return out


def transformers_command(args: ServeArgs) -> list[str]:
    """``python -m runtime.server ...`` for the transformers runtime (one node)."""
    return ["python", "-m", "runtime.server", *_common(args), *_adapters(args)]


def vllm_command(args: ServeArgs) -> list[str]:
    """``python -m runtime.vllm ...`` for the vLLM launcher (one or more nodes)."""
    out = ["python", "-m", "runtime.vllm", *_common(args)]
    out += [
        "--tensor-parallel-size",
        str(args.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(args.pipeline_parallel_size),
    ]
    if args.max_model_len:
        out += ["--max-model-len", str(args.max_model_len)]
    if args.nodes > 1:
        out += [
            "--nnodes",
            str(args.nodes),
            "--node-rank",
            f"$({POD_INDEX_ENV})",
            "--leader-address",
            args.leader_address or "",
        ]
    return out + _adapters(args)
