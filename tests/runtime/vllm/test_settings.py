"""The launcher's settings: flags, the Pod's environment, topology, GPU detection."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from runtime.vllm.cli import detect_hardware
from runtime.vllm.errors import FlagError, HardwareError, SettingsError
from runtime.vllm.inputs import GIB, MIB, AdminDefaults, Topology
from runtime.vllm.settings import parse_settings
from tests.runtime.vllm.probe import ROOT


def test_defaults() -> None:
    settings = parse_settings(["--preset", "falcon-7b"], {})
    assert (settings.port, settings.vllm_port, settings.chat_front) == (5000, 5001, True)
    assert settings.topology == Topology()
    assert settings.defaults == AdminDefaults()
    assert str(settings.adapter_root) == "/mnt/adapter"
    assert settings.adapter_mode == "auto"
    assert str(settings.merge_root) == "/mnt/adapter/.merged"


def test_adapter_mode_and_merge_root() -> None:
    settings = parse_settings(
        ["--preset", "p", "--adapter-mode", "merge", "--adapter-root", "/data/a"], {}
    )
    assert (settings.adapter_mode, str(settings.merge_root)) == ("merge", "/data/a/.merged")
    moved = parse_settings(["--preset", "p", "--merge-root", "/scratch/merged"], {})
    assert str(moved.merge_root) == "/scratch/merged"


def test_statefulset_pod_from_the_downward_api() -> None:
    env = {"POD_NAME": "workspace-llama-2-70b-1", "POD_NAMESPACE": "team-a"}
    settings = parse_settings(
        ["--preset", "llama-2-70b", "--node-count", "2", "--headless-service", "ws-headless"], env
    )
    assert settings.topology == Topology(
        node_count=2,
        ordinal=1,
        leader_address="workspace-llama-2-70b-0.ws-headless.team-a.svc",
    )
    assert settings.topology.role == "worker"
    by_index = parse_settings(
        ["--preset", "p", "--node-count", "3", "--leader-address", "head"], {"POD_INDEX": "0"}
    )
    assert (by_index.topology.role, by_index.topology.leader_address) == ("leader", "head")


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--node-count", "2"], {}, "needs this Pod's ordinal"),
        (["--node-count", "2"], {"POD_NAME": "ws-0"}, "needs the leader's address"),
        (["--node-count", "2", "--ordinal", "2", "--leader-address", "h"], {}, "outside"),
        (["--port", "5001"], {}, "--port and --vllm-port are both 5001"),
        (["--gpu-memory-utilization", "1.5"], {}, "must be in (0, 1]"),
        (["--max-lora-rank", "1024"], {}, "from 1 to 512"),
    ],
)
def test_inconsistent_settings(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace("]", r"\]")):
        parse_settings(["--preset", "p", *argv], env)


def test_bad_flag_values_exit_2_with_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime.vllm", "--preset", "p", "--port", "70000"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "--port='70000': above the maximum 65535; use a value from 1 to 65535" in done.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--preset / --preset-file: give exactly one"),
        (["--preset", "p", "--preset-file", "p.json"], "give exactly one"),
        (["--preset", "p", "--compute-capability", "eight"], "--compute-capability='eight': not"),
        (["--preset", "p", "--gpus", "0"], "--gpus='0': below the minimum 1"),
        (["--preset", "p", "--device", "tpu"], "--device='tpu': not an allowed value; use one"),
    ],
)
def test_bad_flags_name_the_flag_the_value_and_the_fix(argv: list[str], needle: str) -> None:
    with pytest.raises(FlagError, match=re.escape(needle)):
        parse_settings(argv, {})


def test_help_lists_every_group() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime.vllm", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    for text in (
        "--adapter NAME[=STRENGTH]",
        "--adapter-mode {auto,lora,merge}",
        "--merge-root DIR",
        "--node-count",
        "--max-lora-rank",
        "--dry-run",
    ):
        assert text in done.stdout


def test_gpu_detection_fills_what_flags_leave_out() -> None:
    found = (4, 80 * GIB, (8, 0))
    assert detect_hardware(parse_settings(["--preset", "p"], {}), lambda: found).gpus == 4
    given = parse_settings(
        ["--preset", "p", "--gpus", "2", "--gpu-memory-mib", "1024", "--compute-capability", "7.5"],
        {},
    )
    hardware = detect_hardware(given, lambda: found)
    assert (hardware.gpus, hardware.gpu_memory_bytes, hardware.compute_capability) == (
        2,
        1024 * MIB,
        (7, 5),
    )
    partial = parse_settings(["--preset", "p", "--gpus", "1", "--gpu-memory-mib", "1024"], {})
    assert detect_hardware(partial, lambda: None).compute_capability is None
    with pytest.raises(HardwareError, match="no NVIDIA GPU is visible"):
        detect_hardware(parse_settings(["--preset", "p"], {}), lambda: None)
