"""Beam search: one ``model.generate`` call per request, on the engine's second thread.

Beams do not fit the batch's one-token-per-row loop; a beam request runs whole, next to the
batch, and its sink gets every row's tokens and finish at once.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from runtime.server.jobs import EngineObserver, Event, FinishEvent, Job, TokenEvent
from runtime.server.sampling import BeamParams


def beam_search(
    model: Any, job: Job, *, device: torch.device, pad_token_id: int, observer: EngineObserver
) -> None:
    """Run ``job`` (``BeamParams``) as one ``generate`` call; stops early when it is cancelled."""
    from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: PLC0415

    assert isinstance(job.params, BeamParams)

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), job.cancelled, dtype=torch.bool, device=input_ids.device
            )

    started = time.monotonic()
    observer.request_admitted(started - job.submitted, len(job.prompt))
    ids = torch.tensor([job.prompt], dtype=torch.long, device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
        **job.params.kwargs(),
    )
    now = time.monotonic()
    observer.first_token(now - job.submitted)
    events: list[Event] = []
    kwargs = job.params.kwargs()
    pad = kwargs.get("pad_token_id", pad_token_id)
    eos = kwargs.get("eos_token_id")
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    for index, generated in enumerate(out[:, len(job.prompt) :].tolist()):
        ended = any(t in eos_ids for t in generated)
        sequence = list(generated)
        if ended:  # beams that end early are padded after their EOS
            sequence = sequence[: next(i for i, t in enumerate(sequence) if t in eos_ids) + 1]
        else:
            while sequence and sequence[-1] == pad:
                sequence.pop()
        events.extend(TokenEvent(index, t) for t in sequence)
        job.generated += len(sequence)
        reason = "abort" if job.cancelled else "stop" if ended else "length"
        events.append(FinishEvent(index, reason))
    observer.step_done(job.n, job.generated, now - started)
    observer.request_done(now - job.submitted, job.generated)
    job.sink(events)


__all__ = ["beam_search"]
