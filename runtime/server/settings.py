"""The server's settings: one typed object, every option with a description and bounds.

``Settings`` is built from the command line (``parse_settings``); ``python -m runtime.server
--help`` prints every option with its default and bounds. Nothing is read at import time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from api import settings_spec
from api.settings_spec import setting
from runtime.server.errors import SettingsError

DEFAULT_PORT = 5000
DEFAULT_MODEL = "/workspace/tfs/weights"
DEFAULT_ADAPTER_ROOT = Path("/mnt/adapter")


@dataclass(frozen=True)
class Settings:
    """Settings of the transformers inference server."""

    model: str = setting(
        DEFAULT_MODEL,
        "local directory or Hugging Face id of the causal language model (and tokenizer)",
        metavar="PATH_OR_ID",
    )
    served_model_name: str | None = setting(
        None,
        "model id in the OpenAI API (/v1/models and the requests' 'model'); default: the "
        "last part of --model (in a cluster: the Workspace's preset name)",
        metavar="NAME",
    )
    host: str = setting("0.0.0.0", "address to listen on")
    port: int = setting(DEFAULT_PORT, "TCP port (the Service's target port)", low=1, high=65535)
    device: str = setting(
        "auto",
        "where to run: auto picks cuda when present, else cpu; cuda uses every visible GPU "
        "(the layers are split over them when there are several)",
        choices=("auto", "cpu", "cuda"),
    )
    dtype: str = setting(
        "auto",
        "weights dtype: auto is bfloat16 on GPUs that support it (else float16) and float32 on CPU",
        choices=("auto", "float32", "float16", "bfloat16"),
    )
    allow_download: bool = setting(
        False,
        "allow downloading the model from the Hugging Face Hub; off by default "
        "(HF_HUB_OFFLINE=1, local files only)",
    )
    revision: str | None = setting(None, "model revision (branch, tag or commit) when downloading")
    trust_remote_code: bool = setting(
        False, "run model code shipped with the model (needed by some architectures)"
    )
    chat_template: str | None = setting(
        None,
        "chat template for 'messages' (a file path or an inline Jinja template); default: "
        "the tokenizer's",
        metavar="FILE_OR_TEMPLATE",
    )
    max_model_len: int | None = setting(
        None,
        "context window in tokens (prompt + generation); default: the model's",
        low=2,
        high=10_000_000,
    )
    max_num_seqs: int = setting(
        32, "most sequences decoded together in one batch", low=1, high=4096
    )
    max_queued_requests: int = setting(
        256,
        "most requests waiting for a free batch slot; beyond it the server answers 429 "
        "(a request that fits in the batch at once is always accepted)",
        low=0,
        high=1_000_000,
    )
    max_prefill_tokens: int = setting(
        16384,
        "most prompt tokens (padded) prefilled in one step when several requests join",
        low=1,
        high=10_000_000,
    )
    max_n: int = setting(
        8,
        "largest n / num_return_sequences / num_beams of one request (at most --max-num-seqs)",
        low=1,
        high=64,
    )
    retry_after: int = setting(1, "seconds sent in Retry-After with a 429", low=1, high=3600)
    max_request_bytes: int = setting(
        8 << 20, "largest request body in bytes", low=1024, high=1 << 30
    )
    threads: int | None = setting(
        None,
        "CPU threads of torch; default: one per CPU this process may use (its CPU set, capped "
        "by a cgroup CPU limit); set fewer on a node where other processes share those CPUs",
        low=1,
        high=1024,
    )
    seed: int | None = setting(
        None, "seed of the sampler for requests without a seed (default: random)", low=0
    )
    adapter: tuple[str, ...] = setting(
        (),
        "serve the LoRA adapter in <adapter-root>/NAME merged into the weights at STRENGTH "
        "(a decimal, default 1.0; the Workspace's adapters[].strength); repeat per adapter",
        metavar="NAME[=STRENGTH]",
        repeat=True,
    )
    adapter_root: Path = setting(
        DEFAULT_ADAPTER_ROOT, "folder holding one sub-folder per adapter", metavar="DIR"
    )
    log_level: str = setting("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    termination_log: Path = setting(
        Path("/dev/termination-log"),
        "where a start-up refusal (exit 3) is also written, for the Pod's status "
        "(ignored if not writable)",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        problems = settings_spec.problems(self)
        if problems:
            raise SettingsError("; ".join(problems))
        if self.adapter:
            from runtime.adapters.errors import AdapterError  # noqa: PLC0415
            from runtime.adapters.spec import parse_adapter_args  # noqa: PLC0415

            try:
                parse_adapter_args(self.adapter)
            except AdapterError as exc:
                raise SettingsError(f"--adapter: {exc}") from exc
        if self.max_n > self.max_num_seqs:
            raise SettingsError(
                f"--max-n ({self.max_n}) cannot exceed --max-num-seqs ({self.max_num_seqs})"
            )

    @property
    def model_name(self) -> str:
        """The name the OpenAI API serves the model under."""
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model.rstrip("/")).name or self.model


def build_parser(prog: str = "python -m runtime.server") -> argparse.ArgumentParser:
    """The command line: one option per ``Settings`` field, plus ``--print-openapi``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="KAITO transformers inference server: POST /chat (KAITO), the OpenAI API "
        "(/v1/models, /v1/completions, /v1/chat/completions), /health, /metrics, "
        "/openapi.json.",
    )
    settings_spec.add_arguments(parser, Settings)
    parser.add_argument(
        "--print-openapi",
        action="store_true",
        help="print the OpenAPI document of this server and exit",
    )
    return parser


def parse_settings(argv: Sequence[str]) -> tuple[Settings, argparse.Namespace]:
    """Parse a command line into ``Settings``; raises ``SettingsError`` naming a bad value."""
    namespace = build_parser().parse_args(list(argv))
    values, problems = settings_spec.read(Settings, vars(namespace), {})
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**values), namespace


def settings_help() -> str:
    """The ``--help`` text (for documentation)."""
    return build_parser().format_help()


__all__ = ["Settings", "build_parser", "parse_settings", "settings_help"]
