"""``reconciler.inference_config`` (pure): judging the cached ConfigMap, applying it to the
rendered workload, the cache projection, and which Workspaces a ConfigMap change wakes."""

from __future__ import annotations

import copy
from typing import Any

from api.config import DEFAULT_CONFIG
from api.inference_config import HASH_ANNOTATION, InferenceConfig
from api.presets import load_presets
from api.skus import load_skus
from api.workspace import Runtime, Workspace
from reconciler.controller import keys_for
from reconciler.inference_config import (
    INFERENCE_CONFIG_KIND,
    REASON_INFERENCE_CONFIG_INVALID,
    REASON_INFERENCE_CONFIG_MISSING,
    Problem,
    apply,
    judge,
    project,
    referencing,
)
from reconciler.needs import Needs, compute_needs
from reconciler.workload import render
from runtime.server.settings import parse_settings as server_settings
from runtime.vllm.settings import parse_settings as launcher_settings
from tests.reconciler.goldens import IMAGES, workspace


def _cm(text: str | None, name: str = "params", namespace: str = "default") -> dict[str, Any]:
    data = {} if text is None else {"inference_config.yaml": text}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
        "data": {**data, "other": "x" * 1000},
    }


def _with_config(ws: Workspace, name: str | None = "params") -> Workspace:
    obj = ws.to_dict()
    obj["inference"]["config"] = name
    if name is None:
        del obj["inference"]["config"]
    return Workspace.from_dict(obj)


def _needs(ws: Workspace) -> Needs:
    needs = compute_needs(
        ws, presets=load_presets(), skus=load_skus(), config=DEFAULT_CONFIG, nodes={}
    )
    assert isinstance(needs, Needs)
    return needs


def test_judge() -> None:
    ws = _with_config(workspace("falcon-vllm"))
    assert judge(_with_config(ws, None), None) is None
    missing = judge(ws, None)
    assert isinstance(missing, Problem)
    assert missing.reason == REASON_INFERENCE_CONFIG_MISSING
    assert missing.message.endswith("(the running workload is left as it is)")
    nokey = judge(ws, _cm(None))
    assert isinstance(nokey, Problem)
    assert nokey.reason == REASON_INFERENCE_CONFIG_MISSING
    invalid = judge(ws, _cm("vllm:\n  max-lora-rank: 0\n  nope: 1\n"))
    assert isinstance(invalid, Problem)
    assert invalid.reason == REASON_INFERENCE_CONFIG_INVALID
    assert "vllm.max-lora-rank is out of range (got 0)" in invalid.message
    assert "vllm.nope is not a known setting" in invalid.message
    ok = judge(ws, _cm("vllm:\n  max-lora-rank: 64\n"))
    assert isinstance(ok, InferenceConfig)
    assert dict(ok.section(Runtime.VLLM)) == {"max-lora-rank": 64}


def test_apply_adds_flags_and_the_hash_and_changes_nothing_else() -> None:
    ws = _with_config(workspace("falcon-vllm"))
    needs = _needs(ws)
    workload = render(ws, needs, nodes=["n1"], images=IMAGES)[-1]
    before = copy.deepcopy(workload)
    config = judge(ws, _cm("vllm:\n  gpu-memory-utilization: 0.7\n"))
    assert isinstance(config, InferenceConfig)
    out = apply(workload, needs.runtime, config)
    assert workload == before  # not mutated
    template = out["spec"]["template"]
    assert template["metadata"]["annotations"][HASH_ANNOTATION] == config.digest
    (container,) = template["spec"]["containers"]
    old_command = before["spec"]["template"]["spec"]["containers"][0]["command"]
    assert container["command"] == [*old_command, "--gpu-memory-utilization", "0.7"]
    container["command"] = old_command
    del template["metadata"]["annotations"][HASH_ANNOTATION]
    if not template["metadata"]["annotations"]:
        del template["metadata"]["annotations"]
    assert out == before


def test_project_keeps_only_the_inference_key() -> None:
    assert project(_cm("vllm: {}\n")) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "params", "namespace": "default", "resourceVersion": "7"},
        "data": {"inference_config.yaml": "vllm: {}\n"},
    }
    assert project(_cm(None))["data"] == {}


def test_a_configmap_change_wakes_the_workspaces_that_name_it() -> None:
    def ws(name: str, namespace: str, config: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "metadata": {"name": name, "namespace": namespace},
            "inference": {"preset": {"name": "falcon-7b"}},
        }
        if config:
            obj["inference"]["config"] = config
        return obj

    workspaces = [
        ws("a", "default", "params"),
        ws("b", "default", "params"),
        ws("c", "default", "other"),
        ws("d", "team", "params"),
        ws("e", "default", None),
    ]
    cm = project(_cm("vllm: {}\n"))
    assert referencing(cm, workspaces) == {("default", "a"), ("default", "b")}
    assert keys_for(INFERENCE_CONFIG_KIND, cm, None, workspaces) == {
        ("default", "a"),
        ("default", "b"),
    }
    # The admin ConfigMap still wakes every Workspace.
    assert len(keys_for("ConfigMap", None, cm, workspaces)) == 5


FULL = (
    "vllm:\n  max-model-len: 2048\n  gpu-memory-utilization: 0.85\n  max-lora-rank: 128\n"
    "  max-loras: 2\n  max-num-seqs: 8\n  max-num-batched-tokens: 4096\n  cpu-offload-gb: 0\n"
    "  enable-prefix-caching: false\n  enforce-eager: true\n  swap-space: 4\n"
    "transformers:\n  max-model-len: 1024\n  max-num-seqs: 16\n  max-queued-requests: 10\n"
    "  max-prefill-tokens: 2048\n  max-n: 4\n  max-request-bytes: 65536\n  retry-after: 2\n"
    "  threads: 2\n  seed: 7\n"
)


def test_every_key_reaches_the_runtimes_command_line_parsers() -> None:
    """The rendered commands parse with the runtimes' own parsers and carry every value
    (catches a renamed flag of either runtime)."""
    vllm_ws = _with_config(workspace("falcon-vllm"))
    config = judge(vllm_ws, _cm(FULL))
    assert isinstance(config, InferenceConfig)
    workload = apply(
        render(vllm_ws, _needs(vllm_ws), nodes=["n1"], images=IMAGES)[-1], Runtime.VLLM, config
    )
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "runtime.vllm"]
    launcher = launcher_settings(container["command"][3:], {})
    d = launcher.defaults
    assert (d.max_model_len, d.gpu_memory_utilization, d.max_lora_rank, d.max_loras) == (
        2048, 0.85, 128, 2,
    )  # fmt: skip
    assert d.extra_args == (
        "--max-num-seqs=8",
        "--max-num-batched-tokens=4096",
        "--cpu-offload-gb=0",
        "--no-enable-prefix-caching",
        "--enforce-eager",
    )

    tf_ws = _with_config(workspace("falcon-transformers"))
    workload = apply(
        render(tf_ws, _needs(tf_ws), nodes=["n1"], images=IMAGES)[-1],
        Runtime.TRANSFORMERS,
        config,
    )
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "runtime.server"]
    settings, _ = server_settings(container["command"][3:])
    assert (
        settings.max_model_len,
        settings.max_num_seqs,
        settings.max_queued_requests,
        settings.max_prefill_tokens,
        settings.max_n,
        settings.max_request_bytes,
        settings.retry_after,
        settings.threads,
        settings.seed,
    ) == (1024, 16, 10, 2048, 4, 65536, 2, 2, 7)
