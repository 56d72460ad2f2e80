"""Lone requests: our transformers runtime against a one-at-a-time pipeline server, and against
another checkout of our runtime (before/after a change), side by side.

One client sends greedy ``POST /chat`` requests for exactly ``--tokens`` new tokens, one at a
time, to each server in turn: (a) ``python -m runtime.server`` of this tree, (a0) the same
command run in ``--before DIR`` (for example ``git archive <commit> | tar -x -C DIR``), (b)
``bench/baseline_server.py``. A round sends ``--requests`` requests to each server (the server
order rotates each round); latencies are compared as medians within a round, then the median
over rounds.

    python bench/lone_bench.py --model "$(python -m tests.support.tiny_model bench-narrow)" \\
        --before /tmp/kaito-before --rounds 5 --json bench/lone_results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serving_bench import Server, load, make_prompts  # noqa: E402

from tests.support.procs import free_port  # noqa: E402
from tests.support.tiny_model import BENCH_NARROW_SPEC, build_tiny_llama  # noqa: E402


def ours(name: str, model: str, threads: int, cwd: Path) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "runtime.server", "--model", model, "--host", "127.0.0.1",
        "--port", str(port), "--device", "cpu", "--dtype", "float32",
        "--max-num-seqs", "32", *(["--threads", str(threads)] if threads else []),
    ]  # fmt: skip
    return Server(name, argv, port, env={"PYTHONPATH": str(cwd)}, cwd=cwd)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    model = args.model or str(build_tiny_llama(BENCH_NARROW_SPEC))
    servers = {"a": ours("lone-a", model, args.threads, ROOT)}
    if args.before:
        servers["a0"] = ours("lone-a0", model, args.threads, args.before)
    port = free_port()
    servers["b"] = Server(
        "lone-b",
        [
            sys.executable, "bench/baseline_server.py", "--model", model, "--port", str(port),
            *(["--threads", str(args.threads)] if args.threads else []),
        ],
        port,
    )  # fmt: skip
    prompts = make_prompts(args.requests)
    rounds: dict[str, list[float]] = {k: [] for k in servers}
    load_start = os.getloadavg()
    try:
        for server in servers.values():
            await server.wait()
        for server in servers.values():
            await load(server.url, prompts[:1], 8)
        keys = list(servers)
        for r in range(args.rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in order:
                latencies = [
                    (await load(servers[key].url, [p], args.tokens))["p50_s"] for p in prompts
                ]
                rounds[key].append(statistics.median(latencies))
            line = ", ".join(f"{k} {rounds[k][-1]:.3f} s" for k in keys)
            print(f"round {r + 1}: median lone latency {line}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    ratios = {
        f"{k}_over_{ref}": [x / y for x, y in zip(rounds[k], rounds[ref], strict=True)]
        for k, ref in [("a", "b"), ("a0", "b"), ("a", "a0")]
        if k in rounds and ref in rounds
    }
    return {
        "command": " ".join(sys.argv),
        "model": model,
        "tokens": args.tokens,
        "threads": args.threads,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "median_latency_s": {k: statistics.median(v) for k, v in rounds.items()},
        "rounds_latency_s": rounds,
        "ratios": {k: {"rounds": v, "median": statistics.median(v)} for k, v in ratios.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: BENCH_NARROW_SPEC's Llama)")
    parser.add_argument("--before", type=Path, help="another checkout whose runtime.server is (a0)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=5, help="lone requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of every server (0: each one's default: runtime.server's --threads "
        "default, torch's for (b))",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = asyncio.run(bench(args))
    print(json.dumps({k: data[k] for k in ("median_latency_s", "ratios")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
