"""merge_checkpoint: adapters merged into a copy of a safetensors checkpoint, shard by shard,
checked against merge_into on the loaded model and against PEFT's own deltas."""

from __future__ import annotations

import filecmp
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from runtime.adapters import (
    MARKER_FILE,
    AdapterSpec,
    CheckpointError,
    LoraAdapter,
    MissingTargetModuleError,
    checkpoint_shards,
    load_adapters,
    merge_checkpoint,
    merge_into,
)
from tests.runtime.adapters.conftest import MakeAdapter, varied_adapters
from tests.runtime.adapters.peft_oracle import expected_weights, load_base
from tests.runtime.vllm.probe import ROOT

TOL = 1e-5
STRENGTHS = {"plain": 0.2, "rs": 0.7, "pattern": 1.0, "off": 0.0}


@pytest.fixture(scope="module")
def four(make_adapter: MakeAdapter) -> dict[str, Path]:
    return varied_adapters(make_adapter, "plain", "rs", "pattern", "off")


def _adapters(paths: dict[str, Path], strengths: dict[str, float]) -> list[LoraAdapter]:
    return load_adapters([AdapterSpec(n, paths[n], strengths[n]) for n in strengths])


@pytest.fixture(scope="module")
def sharded_bf16(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama in bfloat16, in 4 shards with an index, plus its tokenizer files."""
    dest = tmp_path_factory.mktemp("sharded") / "tiny-llama-bf16"
    load_base(tiny_llama, torch.bfloat16).save_pretrained(dest, max_shard_size="80KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copyfile(tiny_llama / name, dest / name)
    assert len(checkpoint_shards(dest)) == 4
    return dest


def _state(model_dir: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in load_base(model_dir, dtype).state_dict().items()}


@pytest.mark.parametrize(
    ("base", "dtype"), [("single", torch.float32), ("sharded", torch.bfloat16)]
)
def test_merged_checkpoint_equals_merge_into(  # noqa: PLR0917 (fixtures)
    base: str,
    dtype: torch.dtype,
    four: dict[str, Path],
    tiny_llama: Path,
    sharded_bf16: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir = tiny_llama if base == "single" else sharded_bf16
    adapters = _adapters(four, STRENGTHS)
    with caplog.at_level(logging.INFO, logger="runtime.adapters"):
        merged = merge_checkpoint(model_dir, adapters, tmp_path / "merged")
    assert not merged.reused
    shards = checkpoint_shards(model_dir)
    assert merged.shards == tuple(p.name for p in shards)
    for number in range(1, len(shards) + 1):
        assert f"merged shard {number}/{len(shards)}" in caplog.text
    # Every non-weight file, the index included, is copied as is.
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert filecmp.cmp(model_dir / name, merged.path / name, shallow=False), name
    if base == "sharded":
        assert filecmp.cmp(
            model_dir / "model.safetensors.index.json",
            merged.path / "model.safetensors.index.json",
            shallow=False,
        )
    # transformers loads the merged folder; its weights equal merge_into on the loaded base.
    got = _state(merged.path, dtype)
    model = load_base(model_dir, dtype)
    report = merge_into(model, adapters)
    want = {k: v.detach() for k, v in model.state_dict().items()}
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert merged.modules_changed == report.modules_changed == 12
    before = _state(model_dir, dtype)
    changed = {k for k in want if not torch.equal(want[k], before[k])}
    assert len(changed) == 12  # q, k, v, o, gate, down in 2 layers


def test_float32_merge_matches_the_formula(
    four: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    """W + Σ s_i·ΔW_i with ΔW_i as PEFT computes it, within 1e-5 (float32 checkpoint)."""
    merged = merge_checkpoint(tiny_llama, _adapters(four, STRENGTHS), tmp_path / "merged")
    got = load_file(str(merged.path / "model.safetensors"))
    want = expected_weights(tiny_llama, four, STRENGTHS)
    for module, weight in want.items():
        assert (got[f"{module}.weight"] - weight).abs().max().item() < TOL, module
    base = load_file(str(tiny_llama / "model.safetensors"))
    untouched = set(base) - {f"{m}.weight" for m in want}
    assert untouched
    for key in untouched:
        assert torch.equal(got[key], base[key]), key


def test_strength_zero_reproduces_the_base_bit_for_bit(
    four: dict[str, Path], sharded_bf16: Path, tmp_path: Path
) -> None:
    zero = dict.fromkeys(STRENGTHS, 0.0)
    merged = merge_checkpoint(sharded_bf16, _adapters(four, zero), tmp_path / "merged")
    assert merged.modules_changed == 0
    for shard in checkpoint_shards(sharded_bf16):
        assert filecmp.cmp(shard, merged.path / shard.name, shallow=False), shard.name
    assert sorted(p.name for p in merged.path.iterdir()) == sorted(
        [*(p.name for p in sharded_bf16.iterdir()), MARKER_FILE]
    )


def test_a_mismatching_adapter_writes_nothing(
    four: dict[str, Path],
    make_adapter: MakeAdapter,
    tiny_gpt2: Path,
    tiny_llama: Path,
    tmp_path: Path,
) -> None:
    gpt2 = make_adapter(
        "gpt2",
        base=tiny_gpt2,
        r=4,
        lora_alpha=6,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
        seed=5,
    )
    adapters = _adapters({**four, "gpt2": gpt2}, {"plain": 0.5, "gpt2": 0.5})
    out = tmp_path / "volume" / "merged"
    with pytest.raises(MissingTargetModuleError, match="adapter 'gpt2' targets"):
        merge_checkpoint(tiny_llama, adapters, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_same_inputs_reuse_the_folder_and_a_change_merges_again(
    four: dict[str, Path], sharded_bf16: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    first = merge_checkpoint(sharded_bf16, _adapters(four, {"plain": 0.2}), out)
    marker = json.loads((out / MARKER_FILE).read_text())
    assert [(a["name"], a["strength"]) for a in marker["fingerprint"]["adapters"]] == [
        ("plain", 0.2)
    ]
    assert first.bytes_written == sum(p.stat().st_size for p in checkpoint_shards(sharded_bf16))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    again = merge_checkpoint(sharded_bf16, _adapters(four, {"plain": 0.2}), out)
    assert again.reused
    assert again.bytes_written == 0
    assert again.fingerprint == first.fingerprint
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    changed = merge_checkpoint(sharded_bf16, _adapters(four, {"plain": 0.4}), out)
    assert not changed.reused
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["fingerprint"]["adapters"][0]["strength"] == 0.4
    model = load_base(sharded_bf16, torch.bfloat16)
    merge_into(model, _adapters(four, {"plain": 0.4}))
    got = _state(out, torch.bfloat16)
    for key, value in model.state_dict().items():
        assert torch.equal(got[key], value), key
    # A folder whose shard was damaged (size differs) is not reused.
    shard = out / changed.shards[0]
    with open(shard, "ab") as handle:
        handle.write(b"\0")
    assert not merge_checkpoint(sharded_bf16, _adapters(four, {"plain": 0.4}), out).reused
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folder left


def test_bin_only_checkpoints_are_refused(
    four: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copyfile(tiny_llama / "config.json", legacy / "config.json")
    torch.save(load_file(str(tiny_llama / "model.safetensors")), legacy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"holds only pytorch_model\.bin.*safetensors"):
        merge_checkpoint(legacy, _adapters(four, {"plain": 0.2}), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_quantised_target_is_refused(
    four: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    quantised = tmp_path / "int8"
    shutil.copytree(tiny_llama, quantised)
    tensors = load_file(str(quantised / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors[key] = tensors[key].to(torch.int8)
    save_file(tensors, str(quantised / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"q_proj\.weight.*I8 \(quantised\)"):
        merge_checkpoint(quantised, _adapters(four, {"plain": 0.2}), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_checkpoint_keys_without_the_head_prefix(
    four: dict[str, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    """Hub checkpoints saved from the bare base model (GPT-2's ``h.0...``) lack the prefix
    PEFT's module names carry (``transformer.``, ``model.``)."""
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama, bare)
    tensors = load_file(str(bare / "model.safetensors"))
    tensors = {k.removeprefix("model."): v for k, v in tensors.items()}
    save_file(tensors, str(bare / "model.safetensors"), metadata={"format": "pt"})
    adapters = _adapters(four, {"plain": 0.2})
    merged = merge_checkpoint(bare, adapters, tmp_path / "merged")
    got = load_file(str(merged.path / "model.safetensors"))
    model = load_base(tiny_llama)
    merge_into(model, adapters)
    for key, value in model.state_dict().items():
        assert torch.equal(got[key.removeprefix("model.")], value), key


MEMORY_PROBE = """
import json, re, sys
from pathlib import Path
from runtime.adapters import AdapterSpec, load_adapters, merge_checkpoint

def kib(field):
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text())[1])

model_dir, adapter_dir, out = (Path(a) for a in sys.argv[1:4])
adapters = load_adapters([AdapterSpec("all", adapter_dir, 0.5)])
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
before = kib("VmRSS")
merged = merge_checkpoint(model_dir, adapters, out)
print(json.dumps({"growth": (kib("VmHWM") - before) * 1024, "changed": merged.modules_changed}))
"""


@pytest.mark.slow
def test_memory_holds_one_weight_not_the_checkpoint(tmp_path: Path) -> None:
    """The bench Llama (one 29 MB file, every linear layer of its 8 layers targeted): the
    merge's peak RSS growth stays well below the checkpoint's size (it holds one weight, its
    float32 sum and one delta at a time, about 5 MB here; a shard-at-once merge would hold the
    whole file)."""
    from tests.support.tiny_adapters import make_lora_adapter
    from tests.support.tiny_model import MEDIUM_SPEC, build_tiny_llama

    bench = build_tiny_llama(MEDIUM_SPEC)
    adapter = make_lora_adapter(
        bench,
        tmp_path / "all",
        r=8,
        lora_alpha=16,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        seed=11,
    )
    size = (bench / "model.safetensors").stat().st_size
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(bench), str(adapter), str(tmp_path / "merged")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["changed"] == 7 * MEDIUM_SPEC.num_hidden_layers
    assert answer["growth"] < size / 3, (answer, size)


@pytest.mark.parametrize("kernel", [True, False])
def test_range_copy_in_the_kernel_and_in_chunks(kernel: bool, tmp_path: Path) -> None:
    """Both copy paths (copy_file_range, and the chunked fallback for filesystems without it)."""
    from runtime.adapters.checkpoint import _copy_range

    data = torch.randint(0, 256, (3 * (1 << 20) + 123,), dtype=torch.uint8).numpy().tobytes()
    (tmp_path / "src").write_bytes(data)
    cuts = [0, 10, 1 << 20, (1 << 20) + 7, 3 << 20, len(data)]
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        for start, end in zip(cuts[::2], cuts[1::2], strict=True):
            _copy_range(src, dst, start, end, kernel=kernel)
            dst.write(b"|")
    want = b"|".join(data[s:e] for s, e in zip(cuts[::2], cuts[1::2], strict=True)) + b"|"
    assert (tmp_path / "dst").read_bytes() == want
