"""``python -m reconciler.local run`` as a real process on the tiny model with a real adapter:
real HTTP, the adapter merged as ``runtime.adapters.merge_into`` merges it, errors, signals."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api import seed
from tests.local.procs import Command, port_free, run, wait_none_tagged
from tests.support.procs import free_port

ADAPTER = "falcon-7b-adapter"
STRENGTH = "0.2"  # the seed's
PROMPT = "The Kaito controller adds an init container for each adapter"
GREEDY = {"do_sample": False, "max_new_tokens": 12}
READY = "==> Ctrl-C stops it"


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from tests.support.tiny_model import build_tiny_llama

    return build_tiny_llama()


@pytest.fixture(scope="module")
def adapter_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_adapters import make_lora_adapter

    # std 0.3: strong enough that the seed's strength 0.2 changes greedy decoding.
    out = tmp_path_factory.mktemp("adapter-image-data") / "data"
    return make_lora_adapter(tiny_model, out, r=4, lora_alpha=8, seed=1, std=0.3)


@pytest.fixture(scope="module")
def workspace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ws") / "workspace.yaml"
    path.write_text(seed.FALCON_7B_ADAPTERS_FILLED)
    return path


def start(workspace: Path, model: Path, adapter: Path, port: int, vllm: str = "off") -> Command:
    """The local run; ``vllm="off"``: the transformers runtime serves the (vLLM) Workspace."""
    return Command(
        "reconciler.local",
        [
            "run", str(workspace), "--model", str(model),
            "--adapter-dir", f"{ADAPTER}={adapter}", "--port", str(port), "--vllm", vllm,
        ],
    ).start()  # fmt: skip


@pytest.fixture(scope="module")
def served(
    workspace_file: Path, tiny_model: Path, adapter_dir: Path
) -> Iterator[tuple[Command, str]]:
    port = free_port()
    cmd = start(workspace_file, tiny_model, adapter_dir, port)
    try:
        cmd.wait_line(READY, 180)
        yield cmd, f"http://127.0.0.1:{port}"
    finally:
        cmd.signal(signal.SIGTERM)
        try:
            cmd.wait(60)
        finally:
            cmd.kill()


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"accept": "application/json", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        return r.status, json.loads(r.read())


@pytest.mark.slow
def test_health_and_the_seeds_chat_request(served: tuple[Command, str]) -> None:
    cmd, url = served
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        assert (r.status, json.loads(r.read())) == (200, {"status": "Healthy"})
    status, answer = post(f"{url}/chat", b'{"prompt":"YOUR_PROMPT_HERE"}')  # the seed's body
    assert status == 200
    assert answer["Result"].startswith("YOUR_PROMPT_HERE")  # return_full_text defaults to true
    out = cmd.output
    assert f"==> ready: workspace-falcon-7b serves falcon-7b at {url}" in out
    assert f'curl -X POST "{url}/chat"' in out
    assert f'OpenAI(base_url="{url}/v1"' in out
    assert "runtime: transformers here" in out  # the seed's example defaults to vLLM
    assert f"adapter merged: {ADAPTER} at strength {STRENGTH}" in out


def expected_answers(model_dir: Path, adapter: Path) -> tuple[str, str]:
    """Greedy continuations of PROMPT by the base model and by the base with the adapter merged
    by ``runtime.adapters.merge_into`` at the seed's strength, decoded as /chat returns them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.adapters import adapters_from_args, load_adapters, merge_into

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    answers = []
    for merged in (False, True):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        if merged:
            specs = adapters_from_args([f"{ADAPTER}={STRENGTH}"], adapter.parent)
            merge_into(model, load_adapters(specs))
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pad_token_id=tokenizer.pad_token_id,
                **GREEDY,
            )
        answers.append(PROMPT + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return answers[0], answers[1]


@pytest.mark.slow
def test_the_adapter_is_merged_at_the_workspaces_strength(
    served: tuple[Command, str], tiny_model: Path, adapter_dir: Path
) -> None:
    _, url = served
    body = json.dumps({"prompt": PROMPT, "generate_kwargs": GREEDY}).encode()
    status, answer = post(f"{url}/chat", body)
    assert status == 200
    # merge_into reads <root>/<name>: give it the folder under the adapter's name.
    root = adapter_dir.parent.parent / "root"
    root.mkdir(exist_ok=True)
    link = root / ADAPTER
    if not link.exists():
        link.symlink_to(adapter_dir, target_is_directory=True)
    base, merged = expected_answers(tiny_model, link)
    assert answer["Result"] == merged
    assert merged != base  # the adapter does change the answer


@pytest.mark.slow
def test_the_openai_client(served: tuple[Command, str]) -> None:
    from openai import OpenAI

    _, url = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="falcon-7b", messages=[{"role": "user", "content": "Hello!"}], max_tokens=4
    )
    assert reply.model == "falcon-7b"
    assert reply.choices[0].message.content is not None
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_runtime_cleanly(
    sig: int, workspace_file: Path, tiny_model: Path, adapter_dir: Path
) -> None:
    port = free_port()
    cmd = start(workspace_file, tiny_model, adapter_dir, port)
    try:
        cmd.wait_line(READY, 180)
        assert len(wait_none_tagged(cmd.marker, 0)) == 2  # the command and the runtime
        cmd.signal(sig)
        assert cmd.wait(60) == 0, cmd.output
        assert cmd.lines[-1] == "==> stopped"
        assert "INFO runtime.server: shutting down" in cmd.output  # a clean stop, not a kill
        assert wait_none_tagged(cmd.marker) == []
        assert port_free(port)
    finally:
        cmd.kill()


def test_an_invalid_workspace_exits_2_naming_each_field() -> None:
    obj = yaml.safe_load(seed.FALCON_7B_ADAPTERS)  # the doc's <YOUR_IMAGE> placeholder
    obj["resource"]["instanceType"] = "Standard_NC6s_v3x"
    cmd = run("reconciler.local", ["run", "-", "--dry-run"], stdin=yaml.safe_dump(obj))
    assert cmd.popen is not None
    assert cmd.popen.returncode == 2
    out = cmd.output
    assert "error: standard input is not a valid Workspace (2 problems):" in out
    assert "- resource.instanceType: is not a GPU instance type this cluster knows" in out
    assert '(got "Standard_NC6s_v3x")' in out
    assert "- inference.adapters[0].source.image: is the documentation's placeholder" in out
    assert out.count("; fix: ") == 2


def test_an_adapter_image_without_a_folder_exits_2_naming_it(workspace_file: Path) -> None:
    cmd = run("reconciler.local", ["run", str(workspace_file)])
    assert cmd.popen is not None
    assert cmd.popen.returncode == 2
    assert f"adapter {ADAPTER} (image {seed.ADAPTER_IMAGE}) has no local folder" in cmd.output
    assert f"fix: pass --adapter-dir {ADAPTER}=DIR" in cmd.output


@pytest.mark.slow
def test_a_runtime_that_fails_to_load_exits_1(workspace_file: Path, tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "config.json").write_text("{}")  # a folder that cannot load
    cmd = run(
        "reconciler.local",
        [
            "run", str(workspace_file), "--model", str(tmp_path / "not-a-model"),
            "--adapter-dir", f"{ADAPTER}={tmp_path / 'adapter'}", "--port", str(free_port()),
            "--vllm", "off",
        ],
        timeout=180,
    )  # fmt: skip
    assert cmd.popen is not None
    assert cmd.popen.returncode == 1, cmd.output
    assert "cannot load the tokenizer" in cmd.output  # the runtime's own message
    assert "error: the runtime exited with status 1 before it was ready" in cmd.output
    assert wait_none_tagged(cmd.marker) == []


@pytest.mark.slow
def test_real_vllm_on_cpu_serves_the_seeds_adapter_workspace(
    workspace_file: Path, tmp_path: Path
) -> None:
    """With the vLLM-CPU virtualenv (``make vllm-cpu``), the seed's falcon-7b + adapter
    Workspace (vLLM by default) is served by real vLLM through the launcher, in merge mode
    (no LoRA for Falcon in vLLM): the greedy answer is the adapter merged at 0.2."""
    from tests.runtime.vllm.real import vllm_cpu_python
    from tests.support.tiny_adapters import make_lora_adapter
    from tests.support.tiny_model import VLLM_SPEC, build_tiny_llama

    vllm_cpu_python()  # skips, naming `make vllm-cpu`, where it is not installed
    tiny_model = build_tiny_llama(VLLM_SPEC)  # head_dim 32, which vLLM-CPU's attention has
    adapter_dir = make_lora_adapter(
        tiny_model, tmp_path / "image" / "data", r=4, lora_alpha=8, seed=1, std=0.3
    )
    port = free_port()
    cmd = start(workspace_file, tiny_model, adapter_dir, port, vllm="cpu")
    try:
        cmd.wait_line(READY, 900)
        out = cmd.output
        assert "runtime: vllm here, real vLLM on CPU" in out
        assert "==> starting vLLM on CPU (vllm-cpu): " in out
        body = json.dumps({"prompt": PROMPT, "generate_kwargs": GREEDY}).encode()
        status, answer = post(f"http://127.0.0.1:{port}/chat", body)
        assert status == 200
        root = adapter_dir.parent.parent / "root-vllm"
        root.mkdir(exist_ok=True)
        link = root / ADAPTER
        if not link.exists():
            link.symlink_to(adapter_dir, target_is_directory=True)
        base, merged = expected_answers(tiny_model, link)
        # vLLM's incremental detokenization drops a trailing incomplete character that a
        # one-shot decode shows as U+FFFD.
        assert answer["Result"] == merged.rstrip("\ufffd")
        assert merged != base
        cmd.signal(signal.SIGTERM)
        assert cmd.wait(180) == 0, cmd.output[-3000:]
        assert wait_none_tagged(cmd.marker) == []
        assert port_free(port)
    finally:
        cmd.kill()
