"""The batching engine against plain ``model.generate`` on the tiny Llama (real torch)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from runtime.server.engine import Engine
from runtime.server.errors import OverloadedError
from runtime.server.jobs import ErrorEvent, Event, FinishEvent, TokenEvent
from runtime.server.loader import LoadedModel
from runtime.server.sampling import BeamParams, SamplingParams

PROMPTS = [
    "The",
    "Kaito supports both vLLM and transformers runtime",
    "Users just need to specify the GPU SKU used for inference in the resource spec and",
    "adapters",
    "The OpenAPI specification for the inference API is available",
    "When adapters are specified in the inference spec, the Kaito controller adds",
]


class Collector:
    """A sink that gathers the events of one job and signals when all rows finished."""

    def __init__(self, rows: int = 1) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.reasons: list[str | None] = [None] * rows
        self.errors: list[str] = []
        self.done = threading.Event()
        self._open = rows

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, TokenEvent):
                self.tokens[event.index].append(event.token)
            elif isinstance(event, FinishEvent):
                self.reasons[event.index] = event.reason
                self._open -= 1
            elif isinstance(event, ErrorEvent):
                self.errors.append(event.message)
                self._open = 0
        if self._open <= 0:
            self.done.set()

    def wait(self) -> None:
        assert self.done.wait(120), "the engine did not finish the job"
        assert not self.errors

    def wait_for(self, condition: Callable[[], bool], what: str, *, polls: int = 12_000) -> None:
        """Poll ``condition`` every 10 ms, at most ``polls`` times (2 minutes): fail, never
        hang, when it does not come true, or when the job finishes first."""
        for _ in range(polls):
            if condition():
                return
            assert not self.done.is_set(), f"the job finished before {what}: {self.reasons}"
            self.done.wait(0.01)
        pytest.fail(f"{what} did not happen within {polls} polls of 10 ms")


def make_engine(loaded: LoadedModel, **overrides: Any) -> Engine:
    options: dict[str, Any] = {
        "vocab_size": loaded.limits.vocab_size,
        "pad_token_id": loaded.limits.pad_token_id,
        "device": loaded.device,
        "max_num_seqs": 16,
        "max_queued_requests": 64,
        "max_prefill_tokens": 4096,
        "retry_after": 1,
        "seed": 0,
    }
    options.update(overrides)
    return Engine(loaded.model, **options)


@pytest.fixture
def engine(loaded_tiny: LoadedModel) -> Any:
    eng = make_engine(loaded_tiny)
    eng.start()
    yield eng
    eng.shutdown()


def encode(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text)["input_ids"])


def reference(loaded: LoadedModel, prompt: Sequence[int], **kwargs: Any) -> list[int]:
    """What a lone ``model.generate`` produces for ``prompt``."""
    ids = torch.tensor([list(prompt)])
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pad_token_id=loaded.limits.pad_token_id,
            **kwargs,
        )
    generated: list[int] = out[0, len(prompt) :].tolist()
    eos = set(loaded.limits.eos_token_ids)
    for i, token in enumerate(generated):  # generate pads finished rows after EOS
        if token in eos:
            return generated[: i + 1]
    return generated


def greedy(max_new: int, eos: Sequence[int], **kwargs: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new, eos_token_ids=tuple(eos), **kwargs)


def test_greedy_batched_equals_lone_generate(loaded_tiny: LoadedModel, engine: Engine) -> None:
    eos = loaded_tiny.limits.eos_token_ids
    prompts = [encode(loaded_tiny, p) for p in PROMPTS]
    refs = [reference(loaded_tiny, p, do_sample=False, max_new_tokens=24) for p in prompts]
    # Everything at once (one prefill group), then again staggered so rows join a running batch.
    sinks = [Collector() for _ in prompts]
    for p, sink in zip(prompts, sinks, strict=True):
        engine.submit(p, greedy(24, eos), 1, sink)
    for sink in sinks:
        sink.wait()
    assert [s.tokens[0] for s in sinks] == refs

    staggered = [Collector() for _ in prompts]
    for i, (p, sink) in enumerate(zip(prompts, staggered, strict=True)):
        engine.submit(p, greedy(24 - 3 * i, eos), 1, sink)
        if i % 2:
            sinks[0].done.wait(0.01)  # let a few steps run before the next row joins
    for i, sink in enumerate(staggered):
        sink.wait()
        assert sink.tokens[0] == refs[i][: 24 - 3 * i]


def test_greedy_row_unaffected_by_sampling_neighbours(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    eos = loaded_tiny.limits.eos_token_ids
    prompt = encode(loaded_tiny, PROMPTS[1])
    ref = reference(loaded_tiny, prompt, do_sample=False, max_new_tokens=20)
    lone = Collector()
    noisy = [Collector() for _ in range(4)]
    for i, sink in enumerate(noisy):
        params = SamplingParams(
            max_new_tokens=20,
            do_sample=True,
            temperature=0.5 + i,
            top_k=5 * i,
            top_p=0.9,
            presence_penalty=0.5,
            eos_token_ids=tuple(eos),
        )
        engine.submit(encode(loaded_tiny, PROMPTS[i]), params, 1, sink)
    engine.submit(prompt, greedy(20, eos), 1, lone)
    lone.wait()
    for sink in noisy:
        sink.wait()
    assert lone.tokens[0] == ref


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repetition_penalty": 1.7},
        {"no_repeat_ngram_size": 2},
        {"bad_words_ids": [[5], [40, 41]]},
        {"min_new_tokens": 12, "repetition_penalty": 0.8},
        {"forced_eos_token_id": 1, "remove_invalid_values": True},
        {"encoder_no_repeat_ngram_size": 2},
    ],
)
def test_greedy_processors_match_generate(
    loaded_tiny: LoadedModel, engine: Engine, kwargs: dict[str, Any]
) -> None:
    eos = loaded_tiny.limits.eos_token_ids
    prompts = [encode(loaded_tiny, p) for p in PROMPTS[:3]]
    refs = [
        reference(loaded_tiny, p, do_sample=False, max_new_tokens=16, **kwargs) for p in prompts
    ]
    params_kwargs = dict(kwargs)
    if "bad_words_ids" in params_kwargs:
        params_kwargs["bad_words_ids"] = tuple(tuple(w) for w in params_kwargs["bad_words_ids"])
    params = greedy(16, eos, **params_kwargs)
    sinks = [Collector() for _ in prompts]
    for p, sink in zip(prompts, sinks, strict=True):
        engine.submit(p, params, 1, sink)
    for sink in sinks:
        sink.wait()
    assert [s.tokens[0] for s in sinks] == refs


def test_seeded_sampling_is_reproducible_alone_or_batched(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    eos = loaded_tiny.limits.eos_token_ids
    prompt = encode(loaded_tiny, PROMPTS[2])
    params = SamplingParams(
        max_new_tokens=16, do_sample=True, temperature=1.3, top_k=50, seed=1234, eos_token_ids=eos
    )
    alone = Collector(2)
    engine.submit(prompt, params, 2, alone)
    alone.wait()
    batched = Collector(2)
    others = [Collector() for _ in range(3)]
    for i, sink in enumerate(others):
        engine.submit(encode(loaded_tiny, PROMPTS[i]), greedy(16, eos), 1, sink)
    engine.submit(prompt, params, 2, batched)
    batched.wait()
    for sink in others:
        sink.wait()
    assert batched.tokens == alone.tokens
    assert alone.tokens[0] != alone.tokens[1]  # row i uses seed + i


def test_beam_search_runs_as_generate(loaded_tiny: LoadedModel, engine: Engine) -> None:
    prompt = encode(loaded_tiny, PROMPTS[1])
    kwargs = {
        "max_new_tokens": 10,
        "num_beams": 3,
        "num_return_sequences": 2,
        "do_sample": False,
        "eos_token_id": list(loaded_tiny.limits.eos_token_ids),
        "pad_token_id": loaded_tiny.limits.pad_token_id,
    }
    sink = Collector(2)
    engine.submit(prompt, BeamParams(tuple(kwargs.items()), 2), 2, sink)
    sink.wait()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = loaded_tiny.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs
        )
    assert sink.tokens == [row[len(prompt) :] for row in out.tolist()]


def test_cancel_frees_the_rows(loaded_tiny: LoadedModel, engine: Engine) -> None:
    eos = loaded_tiny.limits.eos_token_ids
    sink = Collector()
    job = engine.submit(encode(loaded_tiny, PROMPTS[0]), greedy(400, (), min_new_tokens=0), 1, sink)
    sink.wait_for(lambda: bool(sink.tokens[0]), "a first token")
    assert engine.running_rows == 1
    engine.cancel(job)
    sink.wait()
    assert sink.reasons == ["abort"]
    assert len(sink.tokens[0]) < 400
    assert engine.running_rows == 0
    after = Collector()
    engine.submit(encode(loaded_tiny, PROMPTS[0]), greedy(3, eos), 1, after)
    after.wait()


def test_queue_bound_refuses_with_overloaded(loaded_tiny: LoadedModel) -> None:
    eng = make_engine(loaded_tiny, max_num_seqs=1, max_queued_requests=1)
    eng.start()
    try:
        prompt = encode(loaded_tiny, PROMPTS[0])
        running = Collector()
        eng.submit(prompt, greedy(300, ()), 1, running)
        running.wait_for(lambda: eng.running_rows > 0, "the first job running")
        queued = Collector()
        eng.submit(prompt, greedy(2, ()), 1, queued)
        with pytest.raises(OverloadedError) as refused:
            eng.submit(prompt, greedy(2, ()), 1, Collector())
        assert refused.value.retry_after == 1
        assert "--max-queued-requests" in str(refused.value)
        running.wait()
        queued.wait()
        assert queued.reasons == ["length"]
    finally:
        eng.shutdown()


def test_long_generations_equal_lone_generate_across_cache_regrowths(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    """Rows that outlive several of the CPU cache's regrowths (``kvcache.HEADROOM`` columns at a
    time), joining and leaving a running batch, still generate what a lone ``generate`` does."""
    prompts = [encode(loaded_tiny, p) for p in PROMPTS[:4]]
    lengths = [150, 40, 150, 90]
    refs = [
        reference(loaded_tiny, p, do_sample=False, max_new_tokens=n, min_new_tokens=n)
        for p, n in zip(prompts, lengths, strict=True)
    ]
    sinks = [Collector() for _ in prompts]
    for i, (p, n, sink) in enumerate(zip(prompts, lengths, sinks, strict=True)):
        engine.submit(p, greedy(n, loaded_tiny.limits.eos_token_ids, min_new_tokens=n), 1, sink)
        if i:
            sinks[0].wait_for(lambda i=i: len(sinks[0].tokens[0]) >= 25 * i, f"step {25 * i}")
    for sink in sinks:
        sink.wait()
    assert [s.tokens[0] for s in sinks] == refs


def test_min_new_tokens_blocks_each_rows_own_eos_ids(
    loaded_tiny: LoadedModel, engine: Engine
) -> None:
    """The tokens a row would choose first serve as its EOS ids: rows with a minimum must not
    end before it, rows without one end at once, as with ``generate``."""
    prompts = [encode(loaded_tiny, p) for p in PROMPTS[:4]]
    firsts = [reference(loaded_tiny, p, do_sample=False, max_new_tokens=3) for p in prompts]
    cases = []
    for i, (p, first) in enumerate(zip(prompts, firsts, strict=True)):
        eos = (first[0], first[1], loaded_tiny.limits.eos_token_ids[0])
        minimum = 6 if i % 2 == 0 else 0
        kwargs = {"eos_token_id": list(eos), "max_new_tokens": 10, "min_new_tokens": minimum}
        ids = torch.tensor([p])
        with torch.inference_mode():
            out = loaded_tiny.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pad_token_id=loaded_tiny.limits.pad_token_id,
                do_sample=False,
                **kwargs,
            )
        ref = out[0, len(p) :].tolist()
        end = next((k + 1 for k, t in enumerate(ref) if t in eos), len(ref))
        cases.append((p, eos, minimum, ref[:end]))
    sinks = [Collector() for _ in cases]
    for (p, eos, minimum, _), sink in zip(cases, sinks, strict=True):
        engine.submit(p, greedy(10, eos, min_new_tokens=minimum), 1, sink)
    for sink in sinks:
        sink.wait()
    for (_, _, minimum, ref), sink in zip(cases, sinks, strict=True):
        assert sink.tokens[0] == ref
        assert len(ref) >= max(minimum, 1)
    assert len(sinks[1].tokens[0]) == 1  # no minimum: it ends with its first token
    assert len(sinks[0].tokens[0]) >= 6


def test_a_cache_that_cannot_merge_runs_the_other_prefill_groups_after_the_first() -> None:
    """Sliding-window caches do not merge (static batching). Requests submitted together fall
    into two prefill groups by length (``prefill.groups``); the first prefill finds out that
    caches do not merge, so the second group waits for the first batch to finish, and every row
    still generates what a lone ``generate`` does."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    model = MistralForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(3, 128, (length,), generator=generator).tolist() for length in (2, 3, 60, 62)
    ]
    refs = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=6,
                min_new_tokens=6,
                pad_token_id=0,
                eos_token_id=1,
            )
        refs.append(out[0, len(p) :].tolist())
    engine = Engine(
        model,
        vocab_size=128,
        pad_token_id=0,
        device=torch.device("cpu"),
        max_num_seqs=8,
        max_queued_requests=8,
        max_prefill_tokens=4096,
        retry_after=1,
        seed=0,
    )
    times: dict[int, list[float]] = {i: [] for i in range(len(prompts))}

    def timed(index: int, sink: Collector) -> Callable[[list[Event]], None]:
        def call(events: list[Event]) -> None:
            times[index].append(time.monotonic())
            sink(events)

        return call

    sinks = [Collector() for _ in prompts]
    with engine._cv:  # all four are admitted together, at the engine's first wake-up
        for i, (p, sink) in enumerate(zip(prompts, sinks, strict=True)):
            engine.submit(p, greedy(6, (1,), min_new_tokens=6), 1, timed(i, sink))
        engine.start()
    try:
        for sink in sinks:
            sink.wait()
    finally:
        engine.shutdown()
    assert [s.tokens[0] for s in sinks] == refs
    assert max(times[0][-1], times[1][-1]) < min(times[2][0], times[3][0])
