"""CPU device mode of the launcher: the plan, the device choice, the refusals (no vLLM run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.vllm.cli import cap_to_model, check_cpu_model, cpu_has_bfloat16, detect_device, main
from runtime.vllm.cpu_kernels import CPU_HEAD_SIZES, config_head_dim, cpu_head_dim_problem
from runtime.vllm.errors import HardwareError, ModelDoesNotFitError
from runtime.vllm.inputs import AdminDefaults, CpuHardware, Hardware, PresetSpec
from runtime.vllm.plan import LaunchPlan, LaunchRequest, build_plan
from runtime.vllm.processes import vllm_command
from runtime.vllm.settings import parse_settings
from runtime.vllm.sizing import plan_cpu_sizing
from tests.runtime.vllm.conftest import tiny_preset
from tests.support.tiny_model import VLLM_SPEC, build_tiny_llama

GPU = (1, 80 * 2**30, (8, 0))


def _argv(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps(tiny_preset(model)))
    return [
        "--preset-file", str(preset), "--model-dir", str(model), "--work-dir", str(tmp_path),
        "--termination-log", str(tmp_path / "termination-log"), "--dry-run", *extra,
    ]  # fmt: skip


def _dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    # VLLM_SPEC: head_dim 32, which vLLM-CPU has a kernel for (TEST_SPEC's 16 is refused).
    model = build_tiny_llama(VLLM_SPEC)
    code = main(_argv(tmp_path, model, *extra), env={})
    out, err = capsys.readouterr()
    assert code == 0, err
    plan: dict[str, Any] = json.loads(out)
    return plan


def test_the_cpu_plan_starts_vllms_module_with_the_kv_cache_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _dry_run(tmp_path, capsys, "--device", "cpu", "--cpu-kv-cache-gib", "2")
    assert plan["device"] == "cpu"
    assert plan["vllm_env"] == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    argv = plan["vllm_argv"]
    assert argv[:5] == ["python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                        str(build_tiny_llama(VLLM_SPEC))]  # fmt: skip
    for flag in ("--gpu-memory-utilization", "--tensor-parallel-size", "--revision"):
        assert flag not in argv
    assert argv[argv.index("--max-model-len") + 1] == "512"  # the whole context fits
    kv = plan["sizing"]["kv_bytes_per_token_per_gpu"]
    assert plan["sizing"]["kv_cache_tokens"] == 2 * 2**30 // kv


def test_an_explicit_dtype_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _dry_run(tmp_path, capsys, "--device", "cpu", "--dtype", "bfloat16")
    argv = plan["vllm_argv"]
    assert argv[argv.index("--dtype") + 1] == "bfloat16"


def test_gpu_plans_are_unchanged_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _dry_run(tmp_path, capsys, "--gpus", "1", "--gpu-memory-mib", "2048",
                    "--compute-capability", "8.0")  # fmt: skip
    assert "device" not in plan
    assert plan["vllm_argv"][:2] == ["vllm", "serve"]
    assert "--gpu-memory-utilization" in plan["vllm_argv"]


@pytest.mark.parametrize(
    ("flags", "bf16"),
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16 amx_tile", True),
     ("fpu avx2 avx512f", False), ("", False)],
)  # fmt: skip
def test_bfloat16_from_the_cpu_flags(flags: str, bf16: bool) -> None:
    assert cpu_has_bfloat16(f"processor\t: 0\nflags\t\t: {flags}\n") is bf16
    cpu = CpuHardware(kv_cache_gib=1, bfloat16=bf16)
    preset = PresetSpec.from_mapping(tiny_preset(build_tiny_llama()))
    sizing = plan_cpu_sizing(preset, cpu, node_count=1, defaults=AdminDefaults())
    assert sizing.dtype == ("bfloat16" if bf16 else "float32")


def _settings(*extra: str) -> Any:
    return parse_settings(["--preset", "p", *extra], {})


def test_auto_picks_the_gpu_when_nvml_sees_one_else_cpu_with_vllm_cpu() -> None:
    found = detect_device(_settings(), lambda: GPU, lambda: True, lambda: "")
    assert isinstance(found, Hardware)
    assert found.gpus == 1
    cpu = detect_device(_settings(), lambda: None, lambda: True, lambda: "flags: amx_bf16")
    assert cpu == CpuHardware(kv_cache_gib=4, bfloat16=True, cpus=cpu.cpus)
    with pytest.raises(HardwareError, match="--device cpu"):
        detect_device(_settings(), lambda: None, lambda: False, lambda: "")
    # --device cpu does not ask NVML at all.
    forced = detect_device(_settings("--device", "cpu"), lambda: GPU, lambda: False, lambda: "")
    assert isinstance(forced, CpuHardware)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--gpus", "2"), "tensor parallelism over GPUs is not available on CPU"),
        (("--node-count", "2", "--ordinal", "0", "--leader-address", "x"), "multi-node"),
    ],
)
def test_cpu_refuses_tensor_parallelism_and_multi_node(extra: tuple[str, ...], words: str) -> None:
    with pytest.raises(HardwareError, match=words):
        detect_device(_settings("--device", "cpu", *extra), lambda: None, lambda: True, str)


def test_a_context_the_kv_cache_cannot_hold_names_the_setting() -> None:
    preset = PresetSpec.from_mapping(
        tiny_preset(build_tiny_llama(), context_length=10**8, num_layers=64)
    )
    with pytest.raises(ModelDoesNotFitError, match="raise --cpu-kv-cache-gib to"):
        plan_cpu_sizing(
            preset, CpuHardware(kv_cache_gib=1), node_count=1,
            defaults=AdminDefaults(min_model_len=10**8),
        )  # fmt: skip


def test_a_small_stand_in_model_caps_the_context(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 256}))
    capped = cap_to_model(AdminDefaults(), tmp_path, 2048)
    assert (capped.max_model_len, capped.min_model_len) == (256, 256)
    assert cap_to_model(AdminDefaults(), tmp_path, 128) == AdminDefaults()


def test_vllm_runs_in_this_interpreter_with_the_plans_environment() -> None:
    preset = PresetSpec.from_mapping(tiny_preset(build_tiny_llama()))
    plan: LaunchPlan = build_plan(
        LaunchRequest(preset=preset, hardware=CpuHardware(kv_cache_gib=3), served_model_name="m")
    )
    argv, env = vllm_command(plan)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_head_sizes_without_a_vllm_cpu_kernel_are_named_with_the_supported_ones() -> None:
    assert cpu_head_dim_problem(64, "preset p") is None
    assert all(cpu_head_dim_problem(h, "m") is None for h in CPU_HEAD_SIZES)
    problem = cpu_head_dim_problem(16, "preset p")
    assert problem is not None
    assert "preset p has head_dim 16" in problem
    assert "32, 64, 80, 96, 112, 128" in problem
    assert "kaito.sh/runtime: transformers" in problem
    assert cpu_head_dim_problem(48, "m") is not None


def test_the_head_size_comes_from_head_dim_else_hidden_over_heads() -> None:
    assert config_head_dim({"head_dim": 128, "hidden_size": 64, "num_attention_heads": 4}) == 128
    assert config_head_dim({"hidden_size": 64, "num_attention_heads": 4}) == 16
    assert config_head_dim({"hidden_size": 65, "num_attention_heads": 4}) is None
    assert config_head_dim({}) is None


def test_the_model_folders_head_size_wins_over_the_presets(tmp_path: Path) -> None:
    preset = PresetSpec.from_mapping(tiny_preset(build_tiny_llama(VLLM_SPEC)))
    check_cpu_model(preset, None)  # head_dim 32: fine
    check_cpu_model(preset, build_tiny_llama(VLLM_SPEC))
    with pytest.raises(HardwareError, match="head_dim 16"):
        check_cpu_model(preset, build_tiny_llama())
    with pytest.raises(HardwareError, match="preset tiny-llama has head_dim 16"):
        check_cpu_model(PresetSpec.from_mapping(tiny_preset(build_tiny_llama())), None)


def test_a_head_size_vllm_cpu_lacks_exits_3_at_plan_time_with_the_termination_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_tiny_llama()  # TEST_SPEC: head_dim 16
    code = main(_argv(tmp_path, model, "--device", "cpu"), env={})
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""  # no plan printed
    message = (tmp_path / "termination-log").read_text()
    assert "has head_dim 16" in message
    assert "32, 64, 80" in message
    assert message.strip() in err
    # The GPU path is not checked (GPU vLLM has kernels for head_dim 16).
    gpu = ["--gpus", "1", "--gpu-memory-mib", "2048", "--compute-capability", "8.0"]
    assert main(_argv(tmp_path, model, *gpu), env={}) == 0


def test_the_reconcilers_cpu_workspace_command_plans_on_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command rendered for a CPU Workspace (the reconciler's golden file) is one the
    launcher accepts: CPU mode with the KV-cache budget the reconciler sized."""
    golden = Path(__file__).parents[2] / "reconciler" / "golden" / "qwen-cpu-vllm.json"
    workload = json.loads(golden.read_text())["workload"][-1]
    command = workload["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "runtime.vllm"]
    extra = ["--work-dir", str(tmp_path), "--dry-run"]
    assert main([*command[3:], *extra], env={}) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "cpu"
    assert plan["vllm_env"] == {"VLLM_CPU_KVCACHE_SPACE": "12"}
    argv = plan["vllm_argv"]
    assert argv[argv.index("--model") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert argv[argv.index("--max-model-len") + 1] == "32768"
