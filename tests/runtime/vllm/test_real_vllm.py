"""Real vLLM generating text on CPU, started through our launcher (``python -m runtime.vllm``).

One launcher (one vLLM start, ~1 min) serves the tiny Llama with two adapters at strengths 0.2
and 1: the Workspace's model name (both combined), each adapter under its own name at its own
strength, and ``tiny-llama-base`` (strength 0). Greedy float32 tokens are compared one for one
with transformers on weights merged by ``runtime.adapters`` at the same strengths, and ``/chat``
with our transformers runtime serving the same adapters. A second start serves a tiny Falcon
(no LoRA in vLLM) in merge mode: the seed's third example. Start-up failures stop before vLLM
loads; the last test of the first server stops it with SIGTERM and finds no process left.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from runtime.adapters import AdapterSpec, load_adapters, merge_into
from tests.runtime.adapters.peft_oracle import load_base
from tests.runtime.harness import RunningServer, make_settings, start_server
from tests.runtime.vllm.conftest import tiny_preset
from tests.runtime.vllm.real import Launcher, run_launcher, session_processes
from tests.runtime.vllm.test_front import SEED_BASIC, SEED_FULL
from tests.support.tiny_adapters import build_tiny_falcon, make_lora_adapter
from tests.support.tiny_model import VLLM_SPEC, build_tiny_llama

pytestmark = pytest.mark.slow

MODEL = "tiny-llama"
STRENGTHS = {"sharp": 0.2, "style": 1.0}
PROMPTS = ("The Workspace", "KAITO serves the model")
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def llama() -> Path:
    return build_tiny_llama(VLLM_SPEC)


@pytest.fixture(scope="module")
def adapters(llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/mnt/adapter with two adapters large enough to change greedy output."""
    root = tmp_path_factory.mktemp("real-vllm-adapters")
    make_lora_adapter(llama, root / "sharp", r=4, lora_alpha=8, seed=11, std=0.3)
    make_lora_adapter(
        llama,
        root / "style",
        r=2,
        lora_alpha=4,
        target_modules=("o_proj", "up_proj", "v_proj"),
        seed=12,
        std=0.3,
    )
    return root


def _preset_file(folder: Path, model: Path, **changes: object) -> Path:
    path = folder / "preset.json"
    path.write_text(json.dumps(tiny_preset(model, **changes)))
    return path


@pytest.fixture(scope="module")
def served(
    llama: Path, adapters: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    work = tmp_path_factory.mktemp("real-vllm")
    launcher = Launcher(
        [
            "--preset-file",
            str(_preset_file(work, llama)),
            "--model-dir",
            str(llama),
            "--adapter-root",
            str(adapters),
            *(f"--adapter={name}={strength}" for name, strength in STRENGTHS.items()),
            "--work-dir",
            str(work / "work"),
            "--termination-log",
            str(work / "termination-log"),
        ],
        work / "launcher.log",
    )
    print(f"vLLM (lora mode) healthy after {launcher.started_s:.1f} s")
    yield launcher
    launcher.stop()
    launcher.kill_leftovers()


@pytest.fixture(scope="module")
def transformers_runtime(llama: Path, adapters: Path) -> Iterator[RunningServer]:
    """Our transformers runtime serving the same adapters at the same strengths."""
    running = start_server(
        make_settings(
            llama,
            adapter=tuple(f"{n}={s}" for n, s in STRENGTHS.items()),
            adapter_root=adapters,
        )
    )
    running.wait_ready()
    yield running
    running.stop()


def greedy_reference(model_dir: Path, root: Path, strengths: dict[str, float]) -> Any:
    model = load_base(model_dir)
    specs = [AdapterSpec(n, root / n, s) for n, s in strengths.items() if s]
    if specs:
        merge_into(model, load_adapters(specs))
    return model


def reference_tokens(model: Any, prompt_ids: list[int]) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, ids.shape[1] :]]


def vllm_tokens(launcher: Launcher, model: str, prompt_ids: list[int]) -> list[int]:
    answer = launcher.post(
        "/v1/completions",
        {
            "model": model,
            "prompt": prompt_ids,
            "max_tokens": NEW_TOKENS,
            "min_tokens": NEW_TOKENS,
            "temperature": 0,
            "return_token_ids": True,
        },
    )
    assert answer.status_code == 200, answer.text
    return [int(t) for t in answer.json()["choices"][0]["token_ids"]]


def prompt_ids(model_dir: Path, prompt: str) -> list[int]:
    from transformers import AutoTokenizer

    return [int(t) for t in AutoTokenizer.from_pretrained(model_dir)(prompt)["input_ids"]]


def test_models_lists_the_model_its_base_alias_and_each_adapter(served: Launcher) -> None:
    answer = httpx.get(f"{served.url}/v1/models", timeout=30)
    assert answer.status_code == 200, answer.text
    assert {m["id"] for m in answer.json()["data"]} == {MODEL, f"{MODEL}-base", *STRENGTHS}


@pytest.mark.parametrize(
    ("name", "strengths"),
    [
        (f"{MODEL}-base", {}),
        ("sharp", {"sharp": 0.2}),
        ("style", {"style": 1.0}),
        (MODEL, STRENGTHS),
    ],
    ids=["strength-0", "strength-0.2", "strength-1", "both-combined"],
)
def test_greedy_tokens_equal_transformers_on_merged_weights(
    served: Launcher, llama: Path, adapters: Path, name: str, strengths: dict[str, float]
) -> None:
    reference = greedy_reference(llama, adapters, strengths)
    base = greedy_reference(llama, adapters, {})
    differs = False
    for prompt in PROMPTS:
        ids = prompt_ids(llama, prompt)
        want = reference_tokens(reference, ids)
        assert vllm_tokens(served, name, ids) == want, (name, prompt)
        differs |= want != reference_tokens(base, ids)
    # The adapters really change the output (else this test could not tell strengths apart).
    assert differs == bool(strengths)


def test_chat_completions_and_streaming(served: Launcher) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is a Workspace?"}],
        "max_tokens": 12,
        "min_tokens": 12,
        "temperature": 0,
    }
    whole = served.post("/v1/chat/completions", body)
    assert whole.status_code == 200, whole.text
    text = whole.json()["choices"][0]["message"]["content"]
    assert whole.json()["model"] == MODEL
    assert whole.json()["usage"]["completion_tokens"] > 0
    pieces: list[str] = []
    with httpx.stream(
        "POST", f"{served.url}/v1/chat/completions", json={**body, "stream": True}, timeout=300
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                pieces.append(delta.get("content") or "")
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == text


def test_seed_chat_bodies(served: Launcher, transformers_runtime: RunningServer) -> None:
    basic = served.post("/chat", SEED_BASIC)
    assert basic.status_code == 200, basic.text
    assert basic.json()["Result"].startswith("YOUR_PROMPT_HERE")
    full = served.post("/chat", SEED_FULL)
    assert full.status_code == 200, full.text
    assert set(full.json()) == {"Result"}
    # Greedy, the Workspace's model name on vLLM equals our transformers runtime's /chat.
    greedy = {**SEED_FULL, "generate_kwargs": {**SEED_FULL["generate_kwargs"], "do_sample": False,
                                               "max_length": 40}}  # fmt: skip
    want = httpx.post(f"{transformers_runtime.url}/chat", json=greedy, timeout=300)
    got = served.post("/chat", greedy)
    assert want.status_code == 200, want.text
    assert got.status_code == 200, got.text
    assert got.json()["Result"] == want.json()["Result"].rstrip("\ufffd")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_beams": 2}, "generate_kwargs.num_beams"),
        ({"typical_p": 0.5}, "generate_kwargs.typical_p"),
        ({"no_repeat_ngram_size": 2}, "generate_kwargs.no_repeat_ngram_size"),
        ({"bad_words_ids": [[1, 2]]}, "generate_kwargs.bad_words_ids"),
    ],
)
def test_what_vllm_cannot_do_is_a_400_naming_the_key(
    served: Launcher, kwargs: dict[str, Any], field: str
) -> None:
    answer = served.post("/chat", {"prompt": "a", "generate_kwargs": kwargs})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"]


METRIC = re.compile(r"^# TYPE (\S+) ", re.MULTILINE)


def test_same_prometheus_metric_names_on_both_runtimes(
    served: Launcher, transformers_runtime: RunningServer
) -> None:
    """Every vllm: family our transformers runtime exports, real vLLM exports too (dashboards
    and autoscalers read either runtime the same way)."""
    for url in (served.url, transformers_runtime.url):  # one request each: counters exist
        assert httpx.post(f"{url}/chat", json=SEED_BASIC, timeout=300).status_code == 200
    ours = set(METRIC.findall(httpx.get(f"{transformers_runtime.url}/metrics", timeout=30).text))
    real = set(METRIC.findall(httpx.get(f"{served.url}/metrics", timeout=30).text))
    ours = {n for n in ours if n.startswith("vllm:")}
    assert len(ours) >= 10, ours
    assert ours <= real, sorted(ours - real)


def test_sigterm_leaves_no_process(served: Launcher) -> None:
    """Last of this server's tests: SIGTERM stops the launcher, vLLM and its engine core."""
    assert len(session_processes(served.process.pid)) >= 2  # launcher + vLLM (+ engine core)
    code = served.stop()
    assert code in (0, -15, 143), served.tail()
    assert session_processes(served.process.pid) == []


def test_falcon_with_an_adapter_is_served_merged(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The seed's third example (falcon-7b + an adapter at 0.2, no runtime annotation) on a tiny
    Falcon: auto mode merges (vLLM has no LoRA for Falcon) and vLLM serves the merged weights,
    greedy tokens equal to transformers on the same merge."""
    work = tmp_path_factory.mktemp("real-falcon")
    falcon = build_tiny_falcon(work / "tiny-falcon", build_tiny_llama(VLLM_SPEC))
    root = work / "adapter"
    make_lora_adapter(
        falcon, root / "falcon-7b-adapter", r=4, lora_alpha=8, target_modules=("query_key_value",),
        seed=21, std=0.3,
    )  # fmt: skip
    config = json.loads((falcon / "config.json").read_text())
    preset = tiny_preset(
        falcon,
        name="tiny-falcon",
        vllm_lora=False,
        num_kv_heads=1,
        num_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        head_dim=config["hidden_size"] // config["num_attention_heads"],
    )
    (work / "preset.json").write_text(json.dumps(preset))
    launcher = Launcher(
        [
            "--preset-file", str(work / "preset.json"), "--model-dir", str(falcon),
            "--adapter-root", str(root), "--adapter=falcon-7b-adapter=0.2",
            "--work-dir", str(work / "work"), "--termination-log", str(work / "termination-log"),
        ],
        work / "launcher.log",
    )  # fmt: skip
    try:
        print(f"vLLM (merge mode, Falcon) healthy after {launcher.started_s:.1f} s")
        models = httpx.get(f"{launcher.url}/v1/models", timeout=30).json()["data"]
        assert [m["id"] for m in models] == ["tiny-falcon"]
        merged = greedy_reference(falcon, root, {"falcon-7b-adapter": 0.2})
        base = greedy_reference(falcon, root, {})
        differs = False
        for prompt in PROMPTS:
            ids = prompt_ids(falcon, prompt)
            want = reference_tokens(merged, ids)
            assert vllm_tokens(launcher, "tiny-falcon", ids) == want, prompt
            differs |= want != reference_tokens(base, ids)
        assert differs
        chat = launcher.post("/chat", SEED_BASIC)
        assert chat.status_code == 200
        assert chat.json()["Result"].startswith("YOUR_PROMPT_HERE")
    finally:
        launcher.stop()
        launcher.kill_leftovers()
    assert session_processes(launcher.process.pid) == []


def _failure_args(work: Path, llama: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--device", "cpu", "--dtype", "float32", "--cpu-kv-cache-gib", "1",
        "--preset-file", str(_preset_file(work, llama)), "--model-dir", str(llama),
        "--adapter-root", str(root), "--work-dir", str(work / "work"),
        "--termination-log", str(work / "termination-log"), *extra,
    ]  # fmt: skip


def _assert_exit_3(done: Any, work: Path, *words: str) -> None:
    assert done.returncode == 3, done.stderr[-3000:]
    message = (work / "termination-log").read_text()
    for word in words:
        assert word in message, message
    assert "kaito vllm launcher:" in done.stderr


def test_start_up_failures_exit_3_with_the_termination_message(
    llama: Path, adapters: Path, tmp_path: Path
) -> None:
    """Checked before vLLM loads anything: a bad adapter, an adapter rank above
    --max-lora-rank, a context the CPU KV cache cannot hold."""
    bad = tmp_path / "bad-root"
    shutil.copytree(adapters, bad)
    (bad / "sharp" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    work = tmp_path / "bad"
    work.mkdir()
    done = run_launcher(_failure_args(work, llama, bad, "--adapter=sharp=0.5"))
    _assert_exit_3(done, work, "sharp")

    work = tmp_path / "rank"
    work.mkdir()
    done = run_launcher(
        _failure_args(work, llama, adapters, "--adapter=sharp=0.5", "--max-lora-rank", "1")
    )
    _assert_exit_3(done, work, "rank", "--max-lora-rank")

    work = tmp_path / "context"
    work.mkdir()
    big = tiny_preset(llama, context_length=4_000_000)
    args = _failure_args(work, llama, adapters, "--min-model-len", "4000000")
    (work / "preset.json").write_text(json.dumps(big))
    # Without --model-dir: a local folder's shorter max_position_embeddings would cap the context.
    at = args.index("--model-dir")
    del args[at : at + 2]
    done = run_launcher(args)
    _assert_exit_3(done, work, "does not fit", "--cpu-kv-cache-gib")
