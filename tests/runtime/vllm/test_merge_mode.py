"""Merge mode: ``python -m runtime.vllm`` for a preset vLLM cannot apply LoRA to (the seed's
falcon-7b example) serves a merged copy of the weights under the Workspace's model name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from api.presets import load_presets
from runtime.adapters import AdapterSpec, load_adapters, merge_into
from runtime.vllm.cli import main
from runtime.vllm.errors import DiskSpaceError, LoraError
from runtime.vllm.merged import DiskNeed, check_disk, disk_need
from runtime.vllm.plan import choose_adapter_mode
from tests.runtime.adapters.conftest import MakeAdapter, varied_adapters
from tests.runtime.adapters.peft_oracle import load_base
from tests.runtime.vllm.conftest import tiny_preset
from tests.runtime.vllm.probe import ROOT, run_probe

GIB = 2**30


@pytest.fixture(scope="module")
def two(make_adapter: MakeAdapter) -> dict[str, Path]:
    return varied_adapters(make_adapter, "plain", "rs")


@pytest.fixture
def root(two: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh /mnt/adapter with the two adapters (merge mode writes .merged/ in it)."""
    dest = tmp_path / "adapter"
    for name, path in two.items():
        shutil.copytree(path, dest / name)
    return dest


def _preset_file(tmp_path: Path, tiny_llama: Path, **changes: object) -> Path:
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(tiny_preset(tiny_llama, vllm_lora=False, **changes)))
    return path


def _argv(preset_file: Path, root: Path, work: Path, *extra: str) -> list[str]:
    return [
        "--preset-file",
        str(preset_file),
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
        "--dry-run",
        *extra,
    ]


def _dry_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(argv, env={})
    out, err = capsys.readouterr()
    assert code == 0, err
    plan: dict[str, Any] = json.loads(out)
    return plan


def _expected(tiny_llama: Path, two: dict[str, Path], strengths: dict[str, float]) -> Any:
    model = load_base(tiny_llama)
    merge_into(model, load_adapters([AdapterSpec(n, two[n], s) for n, s in strengths.items()]))
    return model.state_dict()


def test_the_seed_example_serves_merged_weights_under_the_model_name(
    two: dict[str, Path],
    root: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No runtime annotation, an architecture without vLLM LoRA, an adapter at 0.2 (the seed's
    third example): auto mode merges, and vLLM serves the merged folder as the model."""
    argv = _argv(
        _preset_file(tmp_path, tiny_llama),
        root,
        tmp_path / "work",
        "--model-dir",
        str(tiny_llama),
        "--adapter=plain=0.2",
        "--adapter=rs=0.7",
    )
    plan = _dry_run(argv, capsys)
    assert plan["adapter_mode"] == "merge"
    assert plan["merged_adapters"] == [
        {"name": "plain", "strength": 0.2},
        {"name": "rs", "strength": 0.7},
    ]
    assert plan["served_names"] == ["tiny-llama"]
    merged = Path(plan["model_path"])
    assert merged.parent == root / ".merged"
    vllm = plan["vllm_argv"]
    assert vllm[:3] == ["vllm", "serve", str(merged)]
    assert vllm[vllm.index("--served-model-name") + 1] == "tiny-llama"
    assert "--enable-lora" not in vllm
    assert "--revision" not in vllm
    assert not (tmp_path / "work" / "loras").exists()
    want = _expected(tiny_llama, two, {"plain": 0.2, "rs": 0.7})
    got = load_file(str(merged / "model.safetensors"))
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    # vLLM builds its engine config from the merged folder (config.json copied with the weights).
    engine = run_probe({"engine": vllm})
    assert engine == {
        "max_model_len": 512,
        "dtype": "torch.bfloat16",
        "served_model_name": "tiny-llama",
        "max_lora_rank": None,
        "max_loras": None,
    }


def test_a_restart_reuses_the_merge_and_a_change_replaces_it(
    root: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset = _preset_file(tmp_path, tiny_llama)
    argv = _argv(preset, root, tmp_path / "work", "--model-dir", str(tiny_llama))
    first = Path(_dry_run([*argv, "--adapter=plain=0.2"], capsys)["model_path"])
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = Path(_dry_run([*argv, "--adapter=plain=0.2"], capsys)["model_path"])
    assert again == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    changed = Path(_dry_run([*argv, "--adapter=plain=0.3"], capsys)["model_path"])
    assert changed != first
    assert [p.name for p in (root / ".merged").iterdir()] == [changed.name]


def test_all_strengths_zero_serve_the_base_itself(
    root: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(
        _preset_file(tmp_path, tiny_llama),
        root,
        tmp_path / "work",
        "--model-dir",
        str(tiny_llama),
        "--adapter=plain=0",
    )
    plan = _dry_run(argv, capsys)
    assert (plan["adapter_mode"], plan["merged_adapters"]) == ("merge", [])
    assert plan["vllm_argv"][2] == str(tiny_llama)
    assert not (root / ".merged").exists()


def test_workers_merge_to_the_same_path(
    root: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vLLM's Ray workers load the weights from their own node: each Pod merges, and the folder
    name depends on the inputs only."""
    preset = _preset_file(tmp_path, tiny_llama, distributed=True)
    common = ["--model-dir", str(tiny_llama), "--adapter=plain=0.2", "--node-count", "2"]
    common += ["--leader-address", "head"]
    nodes = [_argv(preset, root, tmp_path / f"w{n}", *common, "--ordinal", str(n)) for n in (0, 1)]
    for n, argv in enumerate(nodes):
        argv += ["--merge-root", str(tmp_path / f"node-{n}")]
    leader, worker = (_dry_run(argv, capsys) for argv in nodes)
    assert (leader["role"], worker["role"]) == ("leader", "worker")
    assert worker["vllm_argv"] == []
    assert Path(leader["model_path"]).name == Path(worker["model_path"]).name
    assert Path(worker["model_path"]).parent == tmp_path / "node-1"
    assert (Path(worker["model_path"]) / "model.safetensors").is_file()


def _fake_hub_cache(cache: Path, tiny_llama: Path) -> Path:
    """The tiny Llama as huggingface_hub caches kaito-test/tiny-llama at revision 0×40."""
    snapshot = cache / "models--kaito-test--tiny-llama" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_llama, snapshot)
    return snapshot


def _launch(argv: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "runtime.vllm", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )


def test_without_model_dir_the_hub_snapshot_is_merged_and_later_reused(
    root: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    """The preset's repository at its pinned commit, from the HF cache (offline here: nothing is
    downloaded in tests); a restart with the same inputs needs no snapshot at all."""
    cache = tmp_path / "hub"
    snapshot = _fake_hub_cache(cache, tiny_llama)
    argv = _argv(_preset_file(tmp_path, tiny_llama), root, tmp_path / "work", "--adapter=plain=0.2")
    done = _launch(argv, cache)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    merged = Path(plan["model_path"])
    assert plan["vllm_argv"][2] == str(merged)
    assert merged.parent == root / ".merged"
    marker = json.loads((merged / "kaito_merge.json").read_text())
    assert marker["fingerprint"]["base"] == "hf:kaito-test/tiny-llama@" + "0" * 40

    shutil.rmtree(snapshot)  # a restarted container has lost its HF cache
    again = _launch(argv, cache)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["model_path"] == str(merged)
    assert "nothing to download" in again.stderr

    other = _launch([*argv[:-1], "--adapter=plain=0.5"], cache)
    assert other.returncode == 3
    assert "cannot download kaito-test/tiny-llama at revision" in other.stderr
    assert not (root / ".merged").exists() or list((root / ".merged").iterdir()) == []


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("gpt2-adapter", "adapter 'gpt2' targets 6 module(s) the base model does not have"),
        ("bin-only", "holds only pytorch_model.bin"),
        ("lora-forced", "use --adapter-mode merge (or auto, the default)"),
        ("fit", "tiny-llama does not fit"),
    ],
)
def test_prestart_errors_write_nothing(  # noqa: PLR0917 (fixtures)
    case: str,
    needle: str,
    root: Path,
    make_adapter: MakeAdapter,
    tiny_gpt2: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir = tiny_llama
    extra = ["--adapter=plain=0.2"]
    if case == "gpt2-adapter":
        gpt2 = make_adapter(
            "gpt2",
            base=tiny_gpt2,
            r=4,
            lora_alpha=6,
            target_modules=["c_attn", "c_proj"],
            fan_in_fan_out=True,
            seed=5,
        )
        shutil.copytree(gpt2, root / "gpt2")
        extra.append("--adapter=gpt2=0.5")
    elif case == "bin-only":
        model_dir = tmp_path / "legacy"
        model_dir.mkdir()
        shutil.copyfile(tiny_llama / "config.json", model_dir / "config.json")
        torch.save(
            load_file(str(tiny_llama / "model.safetensors")), model_dir / "pytorch_model.bin"
        )
    elif case == "lora-forced":
        extra += ["--adapter-mode", "lora"]
    changes = {"weight_bytes": 40 * GIB} if case == "fit" else {}
    work = tmp_path / "work"
    work.mkdir()
    preset = _preset_file(tmp_path, tiny_llama, **changes)
    argv = _argv(preset, root, work, "--model-dir", str(model_dir), *extra)
    code = main(argv, env={})
    out, err = capsys.readouterr()
    assert code == 3, err
    assert out == ""
    assert needle in err
    assert needle in (work / "termination-log").read_text()
    assert not (root / ".merged").exists() or list((root / ".merged").iterdir()) == []


def test_disk_check() -> None:
    volume = Path("/mnt/adapter/.merged")
    cache = Path("/root/.cache/huggingface/hub")
    fits = [
        DiskNeed(cache, 1, 40 * GIB, 14 * GIB, "downloading tiiuae/falcon-7b"),
        DiskNeed(volume, 1, 40 * GIB, 14 * GIB, "the merged copy"),
    ]
    check_disk(fits)
    shared = [DiskNeed(n.path, n.device, 20 * GIB, n.need, n.what) for n in fits]
    with pytest.raises(DiskSpaceError, match=r"need 28\.00 GiB but the volume .* 20\.00 GiB free"):
        check_disk(shared)
    apart = [DiskNeed(n.path, i, 20 * GIB, n.need, n.what) for i, n in enumerate(fits)]
    check_disk(apart)  # two filesystems of 20 GiB, 14 GiB each
    real = disk_need(Path("/tmp/does/not/exist/yet"), 1, "x")
    assert real.free > 0
    assert real.device == os.stat("/tmp").st_dev


def test_auto_mode_over_the_catalog() -> None:
    presets = list(load_presets())
    for preset in presets:
        want = "lora" if preset.vllm_lora else "merge"
        assert choose_adapter_mode("auto", preset, 1) == want, preset.name
        assert choose_adapter_mode("merge", preset, 2) == "merge"
        assert choose_adapter_mode("auto", preset, 0) == "none"
    assert {p.name for p in presets if not p.vllm_lora} >= {"falcon-7b", "falcon-40b"}
    falcon = load_presets().get("falcon-7b")
    assert falcon is not None
    with pytest.raises(LoraError, match="use --adapter-mode merge"):
        choose_adapter_mode("lora", falcon, 1)
