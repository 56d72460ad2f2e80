"""Where the batching engine's time goes, in one process, interleaved (survives a noisy machine).

    python bench/engine_profile.py --clients 1 16 32 --reps 5 --json bench/engine_profile.json

For each N: the engine (``runtime.server.engine.Engine``, no HTTP) generating exactly
``--tokens`` greedy tokens for N prompts submitted at once, against the offline ceiling (one
left-padded batched ``model.generate`` of the same N prompts). Variants (``--variants``) run in
rotating order inside every repetition, so load swings hit them alike:

* ``engine``: the engine as configured (``--attn``, ``--threads``);
* ``generate``: the offline ceiling;
* ``engine-eager`` / ``generate-eager``: the same with eager attention instead of SDPA;
* ``engine-gqa`` / ``generate-gqa``: the same with the runtime's CPU attention
  (``runtime.server.attention``: SDPA with the KV heads left grouped, no per-step cache copy);
* any of these with ``@T`` (``engine@1``): with T torch threads instead of ``--threads``.

Every variant records wall time, process CPU time and the time inside the model's forward
(hooks on the top module), so ``wall - forward`` is the loop's own work (the engine's sampling,
events, padding, merging and condition variable; ``generate``'s logits processors, stopping
criteria and input preparation). Medians over repetitions are printed and saved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_bench import make_prompts  # noqa: E402
from runtime.server.attention import use_grouped_sdpa  # noqa: E402
from tests.support.tiny_model import BENCH_SPEC, build_tiny_llama  # noqa: E402


class _ForwardClock:
    """Accumulates the wall time spent in a model's forward (hooks on the top module)."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._started = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._pre),
            model.register_forward_hook(self._post),
        ]

    def _pre(self, *_: Any) -> None:
        self._started = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def close(self) -> dict[str, float]:
        for handle in self._handles:
            handle.remove()
        return {"forward": self.seconds, "forwards": self.calls}


def run_engine(model: Any, pad: int, eos: int, prompts: list[list[int]], tokens: int) -> dict:
    import torch

    from runtime.server.engine import Engine
    from runtime.server.jobs import Event, FinishEvent
    from runtime.server.sampling import SamplingParams

    clock = _ForwardClock(model)
    engine = Engine(
        model,
        vocab_size=model.config.vocab_size,
        pad_token_id=pad,
        device=torch.device("cpu"),
        max_num_seqs=64,
        max_queued_requests=64,
        max_prefill_tokens=1 << 20,
        retry_after=1,
    )
    params = SamplingParams(max_new_tokens=tokens, min_new_tokens=tokens, eos_token_ids=(eos,))
    done = threading.Event()
    left = [len(prompts)]
    lock = threading.Lock()

    def sink(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, FinishEvent):
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

    engine.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for prompt in prompts:
        engine.submit(prompt, params, 1, sink)
    done.wait(900)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    engine.shutdown()
    return {"wall": wall, "cpu": cpu, **clock.close()}


def run_generate(model: Any, pad: int, prompts: list[list[int]], tokens: int) -> dict:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    clock = _ForwardClock(model)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=pad,
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, **clock.close()}


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model directory (default: BENCH_SPEC's Llama)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", default=["engine", "generate", "engine-eager", "generate-eager"]
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or str(build_tiny_llama(BENCH_SPEC))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    models = {
        impl: AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation=impl
        ).eval()
        for impl in ("sdpa", "eager")
    }
    models["gqa"] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert use_grouped_sdpa(models["gqa"], torch.device("cpu")), "no grouped KV heads to keep"
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    all_prompts = [list(tokenizer(p)["input_ids"]) for p in make_prompts(max(args.clients))]
    results: dict[str, dict[str, list[dict]]] = {}
    load_start = os.getloadavg()
    for n in args.clients:
        prompts = all_prompts[:n]
        per = results.setdefault(str(n), {v: [] for v in args.variants})
        for rep in range(args.reps + 1):  # the first repetition warms up and is dropped
            order = (
                args.variants[rep % len(args.variants) :]
                + args.variants[: rep % len(args.variants)]
            )
            for variant in order:
                name, _, threads = variant.partition("@")
                kind, _, impl = name.partition("-")
                torch.set_num_threads(int(threads or args.threads))
                model = models[impl or "sdpa"]
                if kind == "engine":
                    sample = run_engine(model, pad, eos, prompts, args.tokens)
                else:
                    sample = run_generate(model, pad, prompts, args.tokens)
                if rep:
                    per[variant].append(sample)
        line = []
        for variant, samples in per.items():
            wall = statistics.median(s["wall"] for s in samples)
            cpu = statistics.median(s["cpu"] for s in samples)
            rate = n * args.tokens / wall
            text = f"{variant} {rate:.0f} tok/s (wall {wall:.2f} s, cpu {cpu:.2f} s"
            fwd = statistics.median(s["forward"] / s["wall"] for s in samples)
            rest = statistics.median(
                1e3 * (s["wall"] - s["forward"]) / s["forwards"] for s in samples
            )
            text += f", forward {fwd:.1%} of wall, {rest:.2f} ms/step outside it)"
            line.append(text)
        print(f"N={n}: " + "; ".join(line), flush=True)
        for impl in ("", "-eager", "-gqa"):
            for threads in ("", "@1", "@2"):
                engine, generate = (
                    per.get(f"engine{impl}{threads}"),
                    per.get(f"generate{impl}{threads}"),
                )
                if engine and generate:
                    ratio = statistics.median(
                        g["wall"] / e["wall"] for e, g in zip(engine, generate, strict=True)
                    )
                    print(
                        f"N={n}: engine{impl}{threads} / generate{impl}{threads} tokens/s "
                        f"(median of per-repetition ratios) {ratio:.3f}"
                    )
    data = {
        "command": " ".join(sys.argv),
        "model": model_dir,
        "threads": args.threads,
        "tokens": args.tokens,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "samples": results,
    }
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
