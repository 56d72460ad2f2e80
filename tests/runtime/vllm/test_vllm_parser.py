"""Every golden argument list, parsed by vLLM's own server parser (vLLM 0.33, on CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.vllm.probe import run_probe
from tests.runtime.vllm.scenarios import GOLDEN_DIR, MERGED, SCENARIOS, WORK

pytestmark = pytest.mark.slow


def _plans() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for scenario in SCENARIOS:
        data = json.loads((GOLDEN_DIR / f"{scenario.name}.json").read_text(encoding="utf-8"))
        for preset, entry in data.items():
            plan = entry.get("leader", entry)
            if "error" not in plan:
                out.append((f"{scenario.name}/{preset}", plan))
    return out


REFUSED = {
    "--max-lora-rank: invalid choice: 24": ["--enable-lora", "--max-lora-rank", "24"],
    "invalid int value: 'two'": ["--tensor-parallel-size", "two"],
    "unrecognized arguments: --no-such-flag": ["--no-such-flag"],
}


def test_vllm_parses_every_golden_argument_list(tmp_path: Path) -> None:
    plans = _plans()
    assert len(plans) > 40
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    argvs = [[a.replace(WORK, str(tmp_path)) for a in plan["vllm_argv"]] for _, plan in plans]
    # Argument lists vLLM must refuse: the probe can fail.
    argvs += [["vllm", "serve", "org/m", *bad] for bad in REFUSED.values()]
    answers = run_probe({"parse": argvs}, offline=False)
    parsed, refused = answers[: len(plans)], answers[len(plans) :]
    for needle, answer in zip(REFUSED, refused, strict=True):
        assert needle in answer.get("error", ""), answer
    for (where, plan), got in zip(plans, parsed, strict=True):
        assert "error" not in got, (where, got)
        sizing = plan["sizing"]
        argv = plan["vllm_argv"]
        assert got["model"] == argv[2], where
        if "--revision" in argv:
            assert got["revision"] == argv[argv.index("--revision") + 1], where
        else:
            assert got["revision"] is None, where
        assert got["served_model_name"] == [plan["served_names"][0]], where
        assert got["dtype"] == sizing["dtype"], where
        assert got["tensor_parallel_size"] == sizing["tensor_parallel_size"], where
        assert got["pipeline_parallel_size"] == sizing["pipeline_parallel_size"], where
        multi = sizing["pipeline_parallel_size"] > 1
        assert got["distributed_executor_backend"] == ("ray" if multi else None), where
        assert got["max_model_len"] == sizing["max_model_len"], where
        assert got["gpu_memory_utilization"] == 0.9, where
        assert (got["host"], got["port"]) == ("127.0.0.1", 5001), where
        assert (got["chat_template"] is not None) == ("--chat-template" in argv), where
        loras = plan["served_names"][1:]
        assert bool(got["enable_lora"]) == bool(loras), where
        assert [m["name"] for m in got["lora_modules"]] == loras, where
        for module in got["lora_modules"]:
            assert module["path"] == f"{tmp_path}/loras/{module['name']}", where
            assert module["base_model_name"] == plan["served_names"][0], where
        if loras:
            assert (got["max_lora_rank"], got["max_loras"]) == (32, 3), where
        if plan["adapter_mode"] == "merge":
            # The merged copy under the Workspace's name, LoRA off, no per-adapter names.
            assert got["model"] == MERGED, where
            assert got["served_model_name"] == [plan["model_name"]], where
            assert not got["enable_lora"], where
            assert [a["name"] for a in plan["merged_adapters"]] == ["adapter-a", "adapter-b"]
    modes = {plan["adapter_mode"] for _, plan in plans}
    assert modes == {"none", "lora", "merge"}
