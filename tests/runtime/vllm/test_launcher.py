"""``python -m runtime.vllm`` on the tiny Llama with real PEFT adapters: the plan, the LoRA folders
as vLLM itself reads them (exact strength), and the pre-start errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from runtime.vllm.cli import main
from tests.runtime.adapters.conftest import MakeAdapter, varied_adapters
from tests.runtime.adapters.peft_oracle import peft_deltas
from tests.runtime.vllm.conftest import tiny_preset
from tests.runtime.vllm.probe import ROOT, run_probe

TOL = 1e-5
STRENGTHS = {"plain": 0.2, "rs": 0.7, "pattern": 1.0, "off": 0.0}
VLLM_LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def four(make_adapter: MakeAdapter) -> dict[str, Path]:
    return varied_adapters(make_adapter, "plain", "rs", "pattern", "off")


def _argv(preset_file: Path, model_dir: Path, work: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--preset-file",
        str(preset_file),
        "--model-dir",
        str(model_dir),
        "--gpus",
        "1",
        "--gpu-memory-mib",
        "2048",
        "--compute-capability",
        "8.0",
        "--adapter-root",
        str(root),
        "--work-dir",
        str(work),
        "--termination-log",
        str(work / "termination-log"),
        *extra,
    ]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv, env={})
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def launched(
    four: dict[str, Path],
    tiny_llama: Path,
    adapter_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("work")
    preset_file = work / "preset.json"
    preset_file.write_text(json.dumps(tiny_preset(tiny_llama)))
    argv = _argv(
        preset_file,
        tiny_llama,
        work,
        adapter_root,
        "--dry-run",
        *(f"--adapter={name}={s}" for name, s in STRENGTHS.items()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "runtime.vllm", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), work


def test_plan_serves_the_combined_adapter_under_the_model_name(
    launched: tuple[dict[str, Any], Path], tiny_llama: Path
) -> None:
    plan, work = launched
    assert plan["role"] == "single"
    assert plan["model_name"] == "tiny-llama"
    assert plan["served_names"] == [
        "tiny-llama-base",
        "tiny-llama",
        "plain",
        "rs",
        "pattern",
        "off",
    ]
    argv = plan["vllm_argv"]
    assert argv[:3] == ["vllm", "serve", str(tiny_llama)]
    assert "--revision" not in argv
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--max-lora-rank") + 1] == "32"  # combined 4 + 8 + 6 = 18
    assert argv[argv.index("--max-loras") + 1] == "5"
    assert argv[argv.index("--chat-template") + 1] == str(work / "chat_template.jinja")
    assert (work / "chat_template.jinja").read_text().startswith("{% for message")
    sources = json.loads((work / "loras" / "tiny-llama" / "kaito_sources.json").read_text())
    assert [(s["name"], s["strength"]) for s in sources] == [
        ("plain", 0.2),
        ("rs", 0.7),
        ("pattern", 1.0),
    ]


EXPECTED_STRENGTHS: dict[str, dict[str, float]] = {
    "tiny-llama": {n: s for n, s in STRENGTHS.items() if s},
    **{name: {name: s} for name, s in STRENGTHS.items()},
}


@pytest.fixture(scope="module")
def vllm_view(launched: tuple[dict[str, Any], Path]) -> tuple[dict[str, Any], dict[str, Path]]:
    """One child process with vLLM: the engine config of the plan, and every LoRA folder as
    vLLM's PEFTHelper and LoRAModel load it (scaling·B@A per module, saved to files)."""
    plan, work = launched
    outs = {served: work / f"vllm-{served}.safetensors" for served in EXPECTED_STRENGTHS}
    jobs: list[dict[str, Any]] = [{"engine": plan["vllm_argv"]}]
    jobs += [
        {
            "lora": {
                "dir": str(work / "loras" / served),
                "modules": VLLM_LLAMA_MODULES,
                "out": str(out),
            }
        }
        for served, out in outs.items()
    ]
    answers = run_probe({"jobs": jobs})
    return answers[0], outs


def test_vllm_builds_its_engine_config_from_the_plan(
    vllm_view: tuple[dict[str, Any], dict[str, Path]],
) -> None:
    assert vllm_view[0] == {
        "max_model_len": 512,
        "dtype": "torch.bfloat16",
        "served_model_name": "tiny-llama-base",
        "max_lora_rank": 32,
        "max_loras": 5,
    }


@pytest.mark.parametrize("served", list(EXPECTED_STRENGTHS))
def test_vllm_reads_the_loras_at_their_exact_strengths(
    served: str,
    vllm_view: tuple[dict[str, Any], dict[str, Path]],
    four: dict[str, Path],
    tiny_llama: Path,
) -> None:
    """vLLM's scaling·B@A of each folder equals Σ s_i·ΔW_i (combined, under the model name) or
    s_i·ΔW_i (each adapter under its own name), with ΔW_i as PEFT computes it."""
    oracle = peft_deltas(tiny_llama, four)
    strengths = EXPECTED_STRENGTHS[served]
    got = load_file(vllm_view[1][served])
    modules = {m for m, by in oracle.items() if any(a in by for a in strengths)}
    assert set(got) == modules, served
    for module in modules:
        want = sum(
            (s * oracle[module][a] for a, s in strengths.items() if a in oracle[module]),
            torch.zeros_like(got[module]),
        )
        assert (got[module] - want).abs().max().item() < TOL, (served, module)
    if served == "off":
        assert all(torch.count_nonzero(t) == 0 for t in got.values())
    else:
        assert any(torch.count_nonzero(t) > 0 for t in got.values())


def test_without_adapters_the_base_keeps_the_model_name(
    tiny_preset_file: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        _argv(tiny_preset_file, tiny_llama, tmp_path, tmp_path, "--dry-run", "--no-chat-front"),
        capsys,
    )
    assert code == 0
    plan = json.loads(out)
    assert plan["served_names"] == ["tiny-llama"]
    argv = plan["vllm_argv"]
    assert "--enable-lora" not in argv
    assert argv[argv.index("--port") + 1] == "5000"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("gpt2-adapter", "adapter 'gpt2' targets 6 module(s) the base model does not have"),
        ("rank", "need LoRA rank 18 (--max-lora-rank 32), above the admin's max LoRA rank 16"),
        ("fit", "tiny-llama does not fit"),
        ("missing", "adapter 'ghost': no directory"),
        ("no-lora", "vLLM cannot serve LoRA adapters for preset tiny-llama"),  # --adapter-mode lora
        ("name-clash", "adapter 'tiny-llama' has the name of the served model"),
        ("multi-node", "needs this Pod's ordinal"),
        ("no-weights", "has no config.json; a private preset image must hold the model's"),
    ],
)
def test_prestart_errors_exit_3_with_the_reason(  # noqa: PLR0917 (fixtures)
    case: str,
    needle: str,
    four: dict[str, Path],
    make_adapter: MakeAdapter,
    tiny_gpt2: Path,
    tiny_llama: Path,
    adapter_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    preset = tiny_preset(tiny_llama)
    extra = ["--adapter", "plain=0.5"]
    if case == "gpt2-adapter":
        make_adapter(
            "gpt2",
            base=tiny_gpt2,
            r=4,
            lora_alpha=6,
            target_modules=["c_attn", "c_proj"],
            fan_in_fan_out=True,
            seed=5,
        )
        extra += ["--adapter", "gpt2=0.5"]
    elif case == "rank":
        extra = [f"--adapter={n}=0.5" for n in ("plain", "rs", "pattern")]
        extra += ["--max-lora-rank", "16"]
    elif case == "fit":
        preset["weight_bytes"] = 40 * 2**30
    elif case == "missing":
        extra = ["--adapter", "ghost=0.5"]
    elif case == "no-lora":
        preset["vllm_lora"] = False
        extra += ["--adapter-mode", "lora"]
    elif case == "name-clash":
        (adapter_root / "tiny-llama").mkdir(exist_ok=True)
        extra = ["--adapter", "tiny-llama=0.5"]
    elif case == "multi-node":
        preset["distributed"] = True
        extra = ["--node-count", "2"]
    model_dir = tiny_llama
    if case == "no-weights":  # a private preset image built without its weights folder
        model_dir = tmp_path / "workspace" / "weights"
        model_dir.mkdir(parents=True)
    preset_file = tmp_path / "preset.json"
    preset_file.write_text(json.dumps(preset))
    code, out, err = _run(_argv(preset_file, model_dir, tmp_path, adapter_root, *extra), capsys)
    assert code == 3, err
    assert out == ""
    assert needle in err
    assert needle in (tmp_path / "termination-log").read_text()
