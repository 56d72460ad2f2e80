"""The server's settings: one typed object, every option with a description and bounds.

``Settings`` is built from the command line (``parse_settings``); ``python -m runtime.server
--help`` prints every option with its default and bounds. Nothing is read at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from runtime.server.errors import SettingsError

DEFAULT_PORT = 5000
DEFAULT_MODEL = "/workspace/tfs/weights"
DEFAULT_ADAPTER_ROOT = Path("/mnt/adapter")


@dataclass(frozen=True)
class Opt:
    """Help text and bounds of one option."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeat: bool = False


@dataclass(frozen=True)
class Settings:
    """Settings of the transformers inference server."""

    model: Annotated[
        str,
        Opt(
            "local directory or Hugging Face id of the causal language model (and tokenizer)",
            metavar="PATH_OR_ID",
        ),
    ] = DEFAULT_MODEL
    served_model_name: Annotated[
        str | None,
        Opt(
            "model id in the OpenAI API (/v1/models and the requests' 'model'); default: the "
            "last part of --model (in a cluster: the Workspace's preset name)",
            metavar="NAME",
        ),
    ] = None
    host: Annotated[str, Opt("address to listen on")] = "0.0.0.0"
    port: Annotated[int, Opt("TCP port (the Service's target port)", minimum=1, maximum=65535)] = (
        DEFAULT_PORT
    )
    device: Annotated[
        str,
        Opt(
            "where to run: auto picks cuda when present, else cpu; cuda uses every visible GPU "
            "(the layers are split over them when there are several)",
            choices=("auto", "cpu", "cuda"),
        ),
    ] = "auto"
    dtype: Annotated[
        str,
        Opt(
            "weights dtype: auto is bfloat16 on GPUs that support it (else float16) and "
            "float32 on CPU",
            choices=("auto", "float32", "float16", "bfloat16"),
        ),
    ] = "auto"
    allow_download: Annotated[
        bool,
        Opt(
            "allow downloading the model from the Hugging Face Hub; off by default "
            "(HF_HUB_OFFLINE=1, local files only)"
        ),
    ] = False
    revision: Annotated[
        str | None, Opt("model revision (branch, tag or commit) when downloading")
    ] = None
    trust_remote_code: Annotated[
        bool, Opt("run model code shipped with the model (needed by some architectures)")
    ] = False
    chat_template: Annotated[
        str | None,
        Opt(
            "chat template for 'messages' (a file path or an inline Jinja template); default: "
            "the tokenizer's",
            metavar="FILE_OR_TEMPLATE",
        ),
    ] = None
    max_model_len: Annotated[
        int | None,
        Opt(
            "context window in tokens (prompt + generation); default: the model's",
            minimum=2,
            maximum=10_000_000,
        ),
    ] = None
    max_num_seqs: Annotated[
        int,
        Opt("most sequences decoded together in one batch", minimum=1, maximum=4096),
    ] = 32
    max_queued_requests: Annotated[
        int,
        Opt(
            "most requests waiting for a free batch slot; beyond it the server answers 429 "
            "(a request that fits in the batch at once is always accepted)",
            minimum=0,
            maximum=1_000_000,
        ),
    ] = 256
    max_prefill_tokens: Annotated[
        int,
        Opt(
            "most prompt tokens (padded) prefilled in one step when several requests join",
            minimum=1,
            maximum=10_000_000,
        ),
    ] = 16384
    max_n: Annotated[
        int,
        Opt(
            "largest n / num_return_sequences / num_beams of one request (at most --max-num-seqs)",
            minimum=1,
            maximum=64,
        ),
    ] = 8
    retry_after: Annotated[
        int, Opt("seconds sent in Retry-After with a 429", minimum=1, maximum=3600)
    ] = 1
    max_request_bytes: Annotated[
        int, Opt("largest request body in bytes", minimum=1024, maximum=1 << 30)
    ] = 8 << 20
    threads: Annotated[
        int | None,
        Opt("CPU threads of torch (default: torch's choice)", minimum=1, maximum=1024),
    ] = None
    seed: Annotated[
        int | None,
        Opt("seed of the sampler for requests without a seed (default: random)", minimum=0),
    ] = None
    adapter: Annotated[
        tuple[str, ...],
        Opt(
            "serve the LoRA adapter in <adapter-root>/NAME merged into the weights at STRENGTH "
            "(a decimal, default 1.0; the Workspace's adapters[].strength); repeat per adapter",
            metavar="NAME[=STRENGTH]",
            repeat=True,
        ),
    ] = ()
    adapter_root: Annotated[
        Path, Opt("folder holding one sub-folder per adapter", metavar="DIR")
    ] = DEFAULT_ADAPTER_ROOT
    log_level: Annotated[
        str, Opt("logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    ] = "INFO"
    termination_log: Annotated[
        Path,
        Opt(
            "where a start-up refusal (exit 3) is also written, for the Pod's status "
            "(ignored if not writable)",
            metavar="FILE",
        ),
    ] = Path("/dev/termination-log")

    def __post_init__(self) -> None:
        for f, opt, value in _options(self):
            if value is None or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                if isinstance(value, float) and not math.isfinite(value):
                    raise SettingsError(f"{_flag(f.name)}: {value} is not a finite number")
                if opt.minimum is not None and value < opt.minimum:
                    raise SettingsError(
                        f"{_flag(f.name)}: {value} is below the minimum {_num(opt.minimum)}"
                    )
                if opt.maximum is not None and value > opt.maximum:
                    raise SettingsError(
                        f"{_flag(f.name)}: {value} is above the maximum {_num(opt.maximum)}"
                    )
            if opt.choices is not None and value not in opt.choices:
                raise SettingsError(
                    f"{_flag(f.name)}: {value!r} is not one of {', '.join(opt.choices)}"
                )
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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(settings: Settings | None = None) -> list[tuple[dataclasses.Field[Any], Opt, Any]]:
    hints = get_type_hints(Settings, include_extras=True)
    out = []
    for f in dataclasses.fields(Settings):
        opt = next(m for m in get_args(hints[f.name])[1:] if isinstance(m, Opt))
        out.append((f, opt, getattr(settings, f.name) if settings is not None else f.default))
    return out


def _base_type(name: str) -> Any:
    hint = get_type_hints(Settings, include_extras=True)[name]
    base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
    args = [a for a in get_args(base) if a is not type(None)]
    return args[0] if args else base


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(opt: Opt) -> str:
    if opt.minimum is not None and opt.maximum is not None:
        return f" [{_num(opt.minimum)}..{_num(opt.maximum)}]"
    if opt.minimum is not None:
        return f" [>= {_num(opt.minimum)}]"
    return ""


def build_parser(prog: str = "python -m runtime.server") -> argparse.ArgumentParser:
    """The command line: one option per ``Settings`` field, plus ``--print-openapi``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="KAITO transformers inference server: POST /chat (KAITO), the OpenAI API "
        "(/v1/models, /v1/completions, /v1/chat/completions), /health, /metrics, "
        "/openapi.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f, opt, default in _options():
        flag = _flag(f.name)
        kind = _base_type(f.name)
        help_text = opt.help + _bounds(opt)
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif opt.repeat:
            parser.add_argument(
                flag, action="append", default=[], metavar=opt.metavar, help=help_text
            )
        else:
            converter = {int: int, float: float, Path: Path}.get(kind, str)
            parser.add_argument(
                flag,
                type=converter,
                default=default,
                choices=opt.choices,
                metavar=opt.metavar if opt.choices is None else None,
                help=help_text,
            )
    parser.add_argument(
        "--print-openapi",
        action="store_true",
        help="print the OpenAPI document of this server and exit",
    )
    return parser


def parse_settings(argv: Sequence[str]) -> tuple[Settings, argparse.Namespace]:
    """Parse a command line into ``Settings`` (argparse exits on malformed options)."""
    namespace = build_parser().parse_args(list(argv))
    values = {f.name: getattr(namespace, f.name) for f, _, _ in _options()}
    values["adapter"] = tuple(values["adapter"])
    return Settings(**values), namespace


def settings_help() -> str:
    """The ``--help`` text (for documentation)."""
    return build_parser().format_help()


__all__ = ["Settings", "build_parser", "parse_settings", "settings_help"]
