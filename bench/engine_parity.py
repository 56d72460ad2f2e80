"""Greedy parity of the batching engine with a lone ``model.generate``, on any device.

    python bench/engine_parity.py --device cuda --dtype float16

Submits 16 prompts at once (one batch, left-padded, different lengths) and compares each row
with ``model.generate`` of that prompt alone. On CPU float32 every row is identical (the test
suite asserts it); on a GPU in half precision, batched kernels may round differently, so this
reports how many rows match and where the first differing token is.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_bench import make_prompts  # noqa: E402
from tests.support.tiny_model import BENCH_SPEC, build_tiny_llama  # noqa: E402


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.server.engine import Engine
    from runtime.server.jobs import Event, FinishEvent, TokenEvent
    from runtime.server.sampling import SamplingParams

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model_dir = args.model or str(build_tiny_llama(BENCH_SPEC))
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
    model.to(device).eval()
    prompts = [list(tokenizer(p)["input_ids"]) for p in make_prompts(16)]
    params = SamplingParams(
        max_new_tokens=args.tokens,
        min_new_tokens=args.tokens,
        eos_token_ids=(tokenizer.eos_token_id,),
    )
    engine = Engine(
        model,
        vocab_size=model.config.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        device=device,
        max_num_seqs=16,
        max_queued_requests=16,
        max_prefill_tokens=1 << 20,
        retry_after=1,
    )
    outputs: list[list[int]] = [[] for _ in prompts]
    done = threading.Event()
    left = [len(prompts)]
    lock = threading.Lock()

    def sink_for(i: int):  # type: ignore[no-untyped-def]
        def sink(events: list[Event]) -> None:
            for event in events:
                if isinstance(event, TokenEvent):
                    outputs[i].append(event.token)
                elif isinstance(event, FinishEvent):
                    with lock:
                        left[0] -= 1
                        if left[0] == 0:
                            done.set()

        return sink

    for i, prompt in enumerate(prompts):
        engine.submit(prompt, params, 1, sink_for(i))
    engine.start()
    done.wait(600)
    engine.shutdown()
    matches = 0
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt], device=device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        lone = out[0, len(prompt) :].tolist()
        if lone == outputs[i]:
            matches += 1
        else:
            first = next(
                j for j, (a, b) in enumerate(zip(lone, outputs[i], strict=False)) if a != b
            )
            print(f"row {i}: differs from token {first} of {args.tokens}")
    print(
        f"{matches}/{len(prompts)} rows identical to a lone generate ({args.device} {args.dtype})"
    )


if __name__ == "__main__":
    main()
