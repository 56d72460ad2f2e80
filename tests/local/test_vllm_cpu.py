"""The local run with real vLLM on CPU: the launcher command (pure) and the environment's lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.local import vllm_cpu
from reconciler.local.plan import LocalOptions, with_vllm_cpu
from tests.api import seed
from tests.local.test_plan import plan_of


def test_a_vllm_workspace_runs_the_vllm_launcher_in_cpu_mode() -> None:
    options = LocalOptions(model="/models/tiny", adapter_root="/tmp/x/adapter", port=5005)
    plan = plan_of(seed.FALCON_7B_ADAPTERS_FILLED, options)
    assert plan.served_by == "transformers"
    assert any(n.startswith("runtime: transformers here;") for n in plan.notes)
    local = with_vllm_cpu(plan, options, python="/venv/bin/python", vllm_port=6006, work_dir="/w")
    assert local.served_by == "vllm-cpu"
    assert local.argv[:5] == ["/venv/bin/python", "-m", "runtime.vllm", "--preset", "falcon-7b"]
    argv = local.argv
    assert argv[argv.index("--model-dir") + 1] == "/models/tiny"
    assert "--adapter=falcon-7b-adapter=0.2" in argv
    assert argv[argv.index("--adapter-root") + 1] == "/tmp/x/adapter"
    assert argv[argv.index("--port") + 1] == "5005"
    assert argv[argv.index("--vllm-port") + 1] == "6006"
    assert argv[argv.index("--device") + 1] == "cpu"
    assert "--dtype" not in argv  # auto: the launcher picks bfloat16 or float32 from the CPU
    assert local.served_model_name == "falcon-7b"
    assert local.notes[0].startswith("runtime: vllm here, real vLLM on CPU")
    assert not any(n.startswith("runtime: transformers here;") for n in local.notes)


def test_the_environment_is_found_by_the_locks_hash_or_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(vllm_cpu.PYTHON_ENV, raising=False)
    monkeypatch.setenv(vllm_cpu.DIR_ENV, str(tmp_path))
    folder = vllm_cpu.env_dir()
    assert folder == tmp_path / vllm_cpu.lock_hash()
    assert vllm_cpu.python_path() is None  # nothing there
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(Path("/bin/true"))
    assert vllm_cpu.python_path() is None  # not complete without the marker
    (folder / vllm_cpu.MARKER).write_text("1 s\n")
    assert vllm_cpu.python_path() == folder / "bin" / "python"
    assert vllm_cpu.ensure(log=False) == folder / "bin" / "python"  # complete: reused as is
    monkeypatch.setenv(vllm_cpu.PYTHON_ENV, "/opt/other/python")
    assert vllm_cpu.python_path() == Path("/opt/other/python")


def test_a_cpu_workspace_runs_locally_on_cpu_and_names_the_clusters_cpu_command() -> None:
    """A CPU Workspace (a CPU-capable preset on a CPU instance type) is sized on its instance
    type; the local command runs on the CPU, and the cluster's is vLLM's CPU mode."""
    from tests.reconciler import examples

    options = LocalOptions(model="/models/tiny", adapter_root="/tmp/x/adapter", port=5005)
    plan = plan_of(examples.CPU_VLLM, options)
    assert plan.shape == "instance type Standard_D8s_v5 (CPU only: 8 vCPUs, 32 GiB memory)"
    assert plan.argv[plan.argv.index("--device") + 1] == "cpu"
    assert plan.cluster_command is not None
    cluster = plan.cluster_command
    assert cluster[cluster.index("--cpu-kv-cache-gib") + 1] == "12"
    local = with_vllm_cpu(plan, options, python="/venv/bin/python", vllm_port=6006, work_dir="/w")
    assert local.argv.count("--device") == 1
    assert local.argv[local.argv.index("--device") + 1] == "cpu"
