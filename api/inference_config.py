"""``inference.config``: the runtime settings a Workspace takes from a ConfigMap (pure).

The field names a ConfigMap in the Workspace's namespace; its ``inference_config.yaml`` key holds
YAML in the shape KAITO ships (the ``inference-params-template``)::

    max_probe_steps: 6          # KAITO's; accepted and ignored (our context length is computed)
    vllm:                       # engine arguments for the vLLM runtime
      gpu-memory-utilization: 0.95
      max-model-len: 4096
    transformers:               # settings of our transformers runtime
      max-num-seqs: 16

Only the section of the Workspace's runtime reaches its Pods (the other is still checked, so a
runtime switch cannot expose a bad value later). Every key is declared once in ``VLLM_KEYS`` /
``TRANSFORMERS_KEYS`` with its type, bounds, help text and the flag it becomes on the runtime's
command line; ``parse`` returns every problem at once as ``FieldError``s naming
``inference.config``, the ConfigMap, the key, the value and the fix (the webhook's message
format), and ``runtime_flags`` turns a valid config into command-line flags.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from api.validation import FieldError
from api.workspace import INFERENCE_CONFIG_KEY, Runtime

FIELD = "inference.config"
HASH_ANNOTATION = "kaito.sh/inference-config-hash"
"""Pod-template annotation: a digest of the ConfigMap's ``inference_config.yaml``."""
MAX_CONFIG_BYTES = 64 * 1024
"""Larger ``inference_config.yaml`` texts are refused (the settings are a few lines)."""
VLLM_MIN_MODEL_LEN = 512
"""The vLLM launcher's default ``--min-model-len``; a smaller ``max-model-len`` lowers it too."""

Kind = Literal["int", "float", "bool", "choice"]
How = Literal["flag", "vllm-arg", "cap", "ignored"]


@dataclass(frozen=True)
class Key:
    """One setting of ``inference_config.yaml``."""

    name: str
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    """The values a ``choice`` key takes."""
    how: How = "flag"
    """``flag``: ``--NAME VALUE`` on the runtime's command line; ``vllm-arg``: passed to vLLM
    through the launcher's ``--vllm-arg``; ``cap``: ``--NAME`` with the smaller of this value
    and the one the reconciler sized; ``ignored``: accepted for KAITO compatibility only."""

    def range_text(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        low = "" if self.minimum is None else _num(self.minimum)
        high = "" if self.maximum is None else _num(self.maximum)
        what = "an integer" if self.kind == "int" else "a number"
        if self.minimum is not None and self.maximum is not None:
            if self.exclusive_minimum:
                return f"{what} above {low} and at most {high}"
            return f"{what} from {low} to {high}"
        if self.minimum is not None:
            return f"{what} {'above' if self.exclusive_minimum else 'of at least'} {low}"
        return what


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(value: float | str) -> str:
    return value if isinstance(value, str) else _num(value)


VLLM_KEYS: tuple[Key, ...] = (
    Key(
        "max-model-len",
        "int",
        "cap on the context length (prompt + output tokens); the launcher still sizes it to "
        "what the GPU memory holds and serves the smaller",
        minimum=1,
        maximum=10_000_000,
        how="flag",
    ),
    Key(
        "gpu-memory-utilization",
        "float",
        "fraction of each GPU's memory vLLM may use",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Key("max-lora-rank", "int", "the largest LoRA rank served", minimum=1, maximum=512),
    Key("max-loras", "int", "LoRAs in one batch; 0: all served LoRAs", minimum=0, maximum=1024),
    Key(
        "max-num-seqs",
        "int",
        "most sequences in one batch",
        minimum=1,
        maximum=65536,
        how="vllm-arg",
    ),
    Key(
        "max-num-batched-tokens",
        "int",
        "most tokens in one batch",
        minimum=1,
        maximum=10_000_000,
        how="vllm-arg",
    ),
    Key(
        "cpu-offload-gb",
        "float",
        "GiB of weights per GPU kept in CPU memory (KAITO's templates set 0)",
        minimum=0,
        maximum=4096,
        how="vllm-arg",
    ),
    Key(
        "dtype",
        "choice",
        "the dtype vLLM computes in; auto: the preset's on GPUs, on CPU bfloat16 where the CPU "
        "has it, else float32 (float32 on CPU: exact, slower)",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    Key("enable-prefix-caching", "bool", "reuse the KV cache of shared prefixes", how="vllm-arg"),
    Key("enforce-eager", "bool", "no CUDA graphs (less memory, slower)", how="vllm-arg"),
    Key(
        "swap-space",
        "float",
        "KAITO's templates set it; vLLM 0.33 has no swap space: accepted and ignored",
        minimum=0,
        maximum=4096,
        how="ignored",
    ),
)

TRANSFORMERS_KEYS: tuple[Key, ...] = (
    Key(
        "max-model-len",
        "int",
        "cap on the context length; the reconciler's sizing still applies and the smaller is "
        "served",
        minimum=2,
        maximum=10_000_000,
        how="cap",
    ),
    Key("max-num-seqs", "int", "most sequences decoded together", minimum=1, maximum=4096),
    Key(
        "max-queued-requests",
        "int",
        "most requests waiting for a batch slot before 429",
        minimum=0,
        maximum=1_000_000,
    ),
    Key(
        "max-prefill-tokens",
        "int",
        "most prompt tokens prefilled in one step",
        minimum=1,
        maximum=10_000_000,
    ),
    Key("max-n", "int", "largest n of one request (at most max-num-seqs)", minimum=1, maximum=64),
    Key("max-request-bytes", "int", "largest request body in bytes", minimum=1024, maximum=1 << 30),
    Key("retry-after", "int", "seconds sent in Retry-After with a 429", minimum=1, maximum=3600),
    Key("threads", "int", "CPU threads of torch", minimum=1, maximum=1024),
    Key("seed", "int", "sampler seed for requests without one", minimum=0, maximum=2**63 - 1),
)

TOP_KEYS: tuple[Key, ...] = (
    Key(
        "max_probe_steps",
        "int",
        "KAITO's context probing; our context length is computed: accepted and ignored",
        minimum=1,
        maximum=64,
        how="ignored",
    ),
)
SECTIONS: dict[str, tuple[Key, ...]] = {
    Runtime.VLLM.value: VLLM_KEYS,
    Runtime.TRANSFORMERS.value: TRANSFORMERS_KEYS,
}
TRANSFORMERS_DEFAULT_MAX_NUM_SEQS = 32
"""The transformers runtime's default ``--max-num-seqs`` (for the ``max-n`` check)."""

Value = int | float | bool | str


@dataclass(frozen=True)
class InferenceConfig:
    """A valid ``inference_config.yaml``: section → key → value."""

    sections: Mapping[str, Mapping[str, Value]] = field(default_factory=dict)
    digest: str = ""
    """sha256 of the YAML text (first 16 hex digits), for the Pod-template annotation."""

    def section(self, runtime: Runtime) -> Mapping[str, Value]:
        return self.sections.get(runtime.value, {})

    def ignored(self) -> list[str]:
        """Keys given that have no effect (``how == "ignored"``), as ``section.key``."""
        out = [k.name for k in TOP_KEYS if k.name in self.sections.get("", {})]
        for name, keys in SECTIONS.items():
            given = self.sections.get(name, {})
            out += [f"{name}.{k.name}" for k in keys if k.how == "ignored" and k.name in given]
        return out


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _error(configmap: str, message: str, fix: str, reason: str, value: Any = None) -> FieldError:
    where = f"ConfigMap {configmap}, key {INFERENCE_CONFIG_KEY}"
    if value is None:
        return FieldError(FIELD, f"{where}: {message}", fix, f"inferenceconfig.{reason}")
    return FieldError(FIELD, f"{where}: {message}", fix, f"inferenceconfig.{reason}", value)


def _unknown(configmap: str, path: str, name: str, known: Sequence[str]) -> FieldError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return _error(
        configmap,
        f"{path}{name} is not a known setting",
        f"{hint}use one of {', '.join(known)} (README: inference.config), or delete it",
        "unknown",
        name,
    )


def _check_value(configmap: str, path: str, key: Key, value: Any) -> FieldError | None:
    where = f"{path}{key.name}"
    fix = f"set {where} to {key.range_text()}"
    if key.kind in ("bool", "choice"):
        fits = (
            isinstance(value, bool)
            if key.kind == "bool"
            else isinstance(value, str) and value in key.choices
        )
        return (
            None
            if fits
            else _error(configmap, f"{where} must be {key.range_text()}", fix, "type", value)
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _error(configmap, f"{where} must be {key.range_text()}", fix, "type", value)
    if key.kind == "int" and not isinstance(value, int):
        return _error(configmap, f"{where} must be an integer", fix, "type", value)
    if not math.isfinite(value):
        return _error(configmap, f"{where} must be a finite number", fix, "range", value)
    low, high = key.minimum, key.maximum
    too_low = low is not None and (value <= low if key.exclusive_minimum else value < low)
    if too_low or (high is not None and value > high):
        return _error(configmap, f"{where} is out of range", fix, "range", value)
    return None


def _section(
    configmap: str, name: str, body: Any, keys: Sequence[Key], errors: list[FieldError]
) -> dict[str, Value]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        errors.append(
            _error(
                configmap,
                f"{name} must be a mapping of settings",
                f"write {name}: followed by indented 'key: value' lines",
                "type",
                body,
            )
        )
        return {}
    by_name = {k.name: k for k in keys}
    out: dict[str, Value] = {}
    for raw, value in body.items():
        key = by_name.get(str(raw))
        if key is None:
            errors.append(_unknown(configmap, f"{name}.", str(raw), list(by_name)))
            continue
        problem = _check_value(configmap, f"{name}.", key, value)
        if problem is not None:
            errors.append(problem)
        else:
            out[key.name] = value
    return out


def _document(configmap: str, data: Mapping[str, Any] | None) -> tuple[str, Any] | FieldError:
    """The ``inference_config.yaml`` text and its YAML mapping, or why there is none."""
    if data is None:
        return _error(
            configmap,
            "the ConfigMap does not exist in the Workspace's namespace",
            f"create it (`kubectl create configmap {configmap} "
            f"--from-file={INFERENCE_CONFIG_KEY}`) in the Workspace's namespace, or remove "
            "inference.config",
            "missing",
        )
    text = data.get(INFERENCE_CONFIG_KEY)
    if not isinstance(text, str):
        keys = ", ".join(sorted(str(k) for k in data)) or "none"
        return _error(
            configmap,
            f"the ConfigMap has no {INFERENCE_CONFIG_KEY} key (its keys: {keys})",
            f"put the settings under the key {INFERENCE_CONFIG_KEY}",
            "nokey",
        )
    if len(text.encode()) > MAX_CONFIG_BYTES:
        return _error(
            configmap,
            f"is {len(text.encode())} bytes, more than {MAX_CONFIG_BYTES}",
            "keep only the settings (README: inference.config lists them)",
            "size",
        )
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        return _error(
            configmap,
            f"is not valid YAML{at}: {problem}",
            "fix the YAML (e.g. `vllm:` then indented `max-model-len: 4096` lines)",
            "yaml",
        )
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        return _error(
            configmap,
            "must be a YAML mapping with vllm: and/or transformers: sections",
            "write e.g. `vllm:` then indented `gpu-memory-utilization: 0.9`",
            "type",
            doc,
        )
    return text, doc


def parse(
    configmap: str, data: Mapping[str, Any] | None
) -> tuple[InferenceConfig | None, list[FieldError]]:
    """Read the ConfigMap's data (``None``: the ConfigMap does not exist).

    Returns ``(config, [])`` or ``(None, errors)`` with every problem (``FieldError``)."""
    loaded = _document(configmap, data)
    if isinstance(loaded, FieldError):
        return None, [loaded]
    text, doc = loaded
    errors: list[FieldError] = []
    sections: dict[str, dict[str, Value]] = {}
    top = {k.name: k for k in TOP_KEYS}
    known_top = [*SECTIONS, *top]
    for raw, body in doc.items():
        name = str(raw)
        if name in SECTIONS:
            sections[name] = _section(configmap, name, body, SECTIONS[name], errors)
        elif name in top:
            problem = _check_value(configmap, "", top[name], body)
            if problem is not None:
                errors.append(problem)
            else:
                sections.setdefault("", {})[name] = body
        else:
            errors.append(_unknown(configmap, "", name, known_top))
    tf = sections.get(Runtime.TRANSFORMERS.value, {})
    max_n, seqs = tf.get("max-n"), tf.get("max-num-seqs", TRANSFORMERS_DEFAULT_MAX_NUM_SEQS)
    if isinstance(max_n, int) and isinstance(seqs, int) and max_n > seqs:
        errors.append(
            _error(
                configmap,
                f"transformers.max-n ({max_n}) exceeds transformers.max-num-seqs ({seqs})",
                "lower max-n or raise max-num-seqs",
                "range",
            )
        )
    if errors:
        return None, errors
    return InferenceConfig(sections=sections, digest=digest(text)), []


def runtime_flags(config: InferenceConfig, runtime: Runtime, command: Sequence[str]) -> list[str]:
    """``command`` (the runtime's rendered command line) with the config's settings for
    ``runtime`` applied: flags appended in catalog order, a ``cap`` replacing the sized value
    when smaller."""
    out = list(command)
    given = config.section(runtime)
    for key in SECTIONS[runtime.value]:
        if key.name not in given or key.how == "ignored":
            continue
        value = given[key.name]
        flag = f"--{key.name}"
        if key.how == "cap":
            if flag in out[:-1]:
                i = out.index(flag) + 1
                if int(value) < int(out[i]):
                    out[i] = str(value)
            else:
                out += [flag, str(value)]
        elif key.how == "vllm-arg":
            if isinstance(value, bool):
                out.append(f"--vllm-arg={flag}" if value else f"--vllm-arg=--no-{key.name}")
            else:
                out.append(f"--vllm-arg={flag}={_text(value)}")
        else:
            out += [flag, str(value).lower() if isinstance(value, bool) else _text(value)]
            if key.name == "max-model-len" and int(value) < VLLM_MIN_MODEL_LEN:
                out += ["--min-model-len", str(value)]
    return out


def catalog_markdown() -> str:
    """The README table of the keys (``tests/api/test_inference_config.py`` keeps it true)."""
    lines = ["| Section | Key | Type and range | Effect |", "|---|---|---|---|"]
    for section, keys in (("(top)", TOP_KEYS), *SECTIONS.items()):
        for k in keys:
            lines.append(f"| `{section}` | `{k.name}` | {k.range_text()} | {k.help} |")
    return "\n".join(lines)
