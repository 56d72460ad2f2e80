"""The batching engine: one thread that runs every request's decode loop in shared batches.

Continuous batching over ``transformers``' ``DynamicCache``: requests that arrive while a batch
is running are prefilled together (left-padded) and merged into the running batch at the next
step; finished, cancelled and disconnected rows leave it at once. Every row carries its own
sampling parameters (``logits.BatchSampler``), so greedy and sampling requests, different
temperatures or penalties, share the same forward passes.

A row computes exactly what a lone ``model.generate`` computes for its prompt: left padding is
masked out, position ids count each row's real tokens, and the logits processors are
``generate``'s. Beam search (``BeamParams``) does not fit a one-token-per-row loop: such
requests run as one ``model.generate`` call on a second worker thread, next to the batch.

The engine knows nothing about HTTP. ``submit`` is thread-safe; results go to the caller's
``sink`` (called on the engine thread, once per step per request, with a list of events).
Around it: ``jobs`` (what goes in and out), ``batch`` (the running batch's tensors and how rows
join and leave), ``prefill`` (which newcomers are prefilled together), ``kvcache`` (the CPU's
growing cache), ``logits`` (per-row sampling) and ``beams`` (beam search).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from runtime.server import prefill
from runtime.server.batch import Batch, Row, append, row_done, select, trim
from runtime.server.beams import beam_search
from runtime.server.errors import OverloadedError
from runtime.server.jobs import (
    EngineObserver,
    ErrorEvent,
    Event,
    FinishEvent,
    Job,
    NullObserver,
    Sink,
    TokenEvent,
)
from runtime.server.logits import (
    BatchSampler,
    build_row_processors,
    greedy_tokens,
    run_row_processors,
)
from runtime.server.sampling import BeamParams, SamplingParams

log = logging.getLogger(__name__)


class Engine:
    """Runs generation jobs in shared batches on one thread (plus one for beam search)."""

    def __init__(
        self,
        model: Any,
        *,
        vocab_size: int,
        pad_token_id: int,
        device: torch.device,
        max_num_seqs: int,
        max_queued_requests: int,
        max_prefill_tokens: int,
        retry_after: int,
        observer: EngineObserver | None = None,
        seed: int | None = None,
    ) -> None:
        self._model = model
        self._vocab = vocab_size
        self._pad = pad_token_id
        self._device = device
        self._max_rows = max_num_seqs
        self._max_queued = max_queued_requests
        self._max_prefill = max_prefill_tokens
        self._retry_after = retry_after
        self._observer: EngineObserver = observer or NullObserver()
        self._generator = torch.Generator(device=device)
        if seed is not None:
            self._generator.manual_seed(seed)
        else:
            self._generator.seed()
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._beams: queue.Queue[Job | None] = queue.Queue()
        self._beams_pending = 0
        self._batch: Batch | None = None
        self._running_rows = 0
        self._stopping = False
        self._can_merge: bool | None = None  # decided at the first prefill
        self._threads: list[threading.Thread] = []

    # ---- public, thread-safe ---------------------------------------------------------------

    def start(self) -> None:
        """Start the batch thread and the beam-search thread."""
        for target, name in ((self._run, "engine-batch"), (self._run_beams, "engine-beam")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the threads; waiting and running requests end with an ``abort``."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._beams.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def submit(
        self,
        prompt: Sequence[int],
        params: SamplingParams | BeamParams,
        n: int,
        sink: Sink,
    ) -> Job:
        """Queue a request; raises ``OverloadedError`` when the queue is full."""
        job = Job(id=next(self._ids), prompt=tuple(prompt), params=params, n=n, sink=sink)
        with self._cv:
            if self._stopping:
                raise OverloadedError("the server is shutting down", retry_after=self._retry_after)
            queued = len(self._waiting) + self._beams_pending
            waiting_rows = sum(j.n for j in self._waiting)
            fits_now = self._running_rows + waiting_rows + job.rows <= self._max_rows
            if queued >= self._max_queued and not (fits_now and job.rows):
                raise OverloadedError(
                    f"the server is at capacity ({self._running_rows} sequences running, "
                    f"{queued} requests queued, --max-queued-requests {self._max_queued}); "
                    f"retry after {self._retry_after} s",
                    retry_after=self._retry_after,
                )
            if isinstance(params, BeamParams):
                self._beams_pending += 1
                self._beams.put(job)
            else:
                self._waiting.append(job)
                self._cv.notify_all()
            self._report_queue()
        return job

    def cancel(self, job: Job) -> None:
        """Stop a job (its client went away); its rows leave the batch at the next step."""
        with self._cv:
            job.cancelled = True
            queued = job in self._waiting
            if queued:
                self._waiting.remove(job)
                self._report_queue()
            self._cv.notify_all()
        if queued:
            self._finish_job_unstarted(job)

    @property
    def waiting(self) -> int:
        return len(self._waiting) + self._beams_pending

    @property
    def running_rows(self) -> int:
        return self._running_rows

    # ---- batch thread ----------------------------------------------------------------------

    def _report_queue(self) -> None:
        self._observer.queue_changed(len(self._waiting) + self._beams_pending, self._running_rows)

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._stopping and not self._waiting and self._batch is None:
                        self._cv.wait()
                    if self._stopping:
                        break
                    newcomers = self._admit()
                try:
                    self._drop_cancelled()
                    if newcomers:
                        newcomers = self._prefill_grouped(newcomers)
                    if self._batch is not None:
                        self._step()
                except Exception as exc:  # the engine must survive a failed step
                    log.exception("generation step failed")
                    self._fail_all(newcomers, f"generation failed: {exc}")
            self._abort_everything()

    def _admit(self) -> list[Job]:
        """Take waiting jobs that fit the free rows and the prefill budget (lock held)."""
        taken: list[Job] = []
        free = self._max_rows - self._running_rows
        if self._batch is not None and self._can_merge is False:
            free = 0  # static batching for caches that cannot be merged
        tokens = 0
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._finish_job_unstarted(job)
                continue
            cost = job.n * len(job.prompt)
            if job.n > free or (taken and tokens + cost > self._max_prefill):
                break
            self._waiting.popleft()
            taken.append(job)
            free -= job.n
            tokens += cost
            self._running_rows += job.n
        if taken:
            self._report_queue()
        return taken

    def _finish_job_unstarted(self, job: Job) -> None:
        job.sink([FinishEvent(i, "abort") for i in range(job.n)])

    def _rows_for(self, job: Job) -> list[Row]:
        assert isinstance(job.params, SamplingParams)
        rows = []
        for i in range(job.n):
            generator = None
            if job.params.seed is not None and job.params.do_sample:
                generator = torch.Generator(device=self._device)
                generator.manual_seed((job.params.seed + i) & 0xFFFF_FFFF_FFFF_FFFF)
            pre, post = (
                build_row_processors(job.params, job.prompt, self._device)
                if job.params.needs_row_processors()
                else ([], [])
            )
            rows.append(Row(job, i, job.params, job.prompt, [], pre, post, generator))
        job.open_rows = job.n
        return rows

    def _prefill_grouped(self, jobs: list[Job]) -> list[Job]:
        """Prefill in groups of similar prompt lengths (``prefill.groups``), merged one by one;
        the jobs started.

        The first prefill of all decides whether this model's caches merge at all; if they do
        not, the jobs of the other groups go back to the head of the queue (static batching).
        On the CPU only: padding costs its full share of compute there (measured); an
        accelerator's under-used batch may pad nearly for free, which is not measured here."""
        if self._can_merge is False or self._device.type != "cpu":
            self._prefill(jobs)
            return jobs
        lengths = [(job.n, len(job.prompt)) for job in jobs]
        groups = [[jobs[i] for i in group] for group in prefill.groups(lengths)]
        for index, group in enumerate(groups):
            if index and not self._can_merge:  # decided by the first group's prefill
                rest = [job for later in groups[index:] for job in later]
                with self._cv:
                    self._waiting.extendleft(reversed(rest))
                    self._running_rows -= sum(job.n for job in rest)
                    self._report_queue()
                return [job for earlier in groups[:index] for job in earlier]
            self._prefill(group)
        return jobs

    def _prefill(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        rows = [row for job in jobs for row in self._rows_for(job)]
        for job in jobs:
            self._observer.request_admitted(now - job.submitted, len(job.prompt))
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt, dtype=torch.long)
            mask[i, width - len(row.prompt) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        started = time.monotonic()
        out = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        if self._can_merge is None:
            from transformers.cache_utils import DynamicLayer  # noqa: PLC0415 (slow import)

            layers = list(getattr(cache, "layers", None) or [])
            self._can_merge = bool(layers) and all(type(x) is DynamicLayer for x in layers)
            if not self._can_merge:
                log.warning(
                    "this model's cache (%s) cannot merge batches: new requests wait for the "
                    "running batch to finish (static batching)",
                    type(cache).__name__,
                )
        if self._can_merge and self._device.type == "cpu":
            from runtime.server.kvcache import grow_in_steps  # noqa: PLC0415 (slow import)

            grow_in_steps(cache)
        batch = Batch(
            rows=rows,
            cache=cache,
            mask=mask,
            positions=torch.tensor([len(r.prompt) for r in rows], device=self._device),
            next_tokens=torch.zeros(len(rows), dtype=torch.long, device=self._device),
            sampler=self._sampler(rows),
        )
        self._choose_and_emit(batch, out.logits[:, -1, :].to(self._device, torch.float32), started)
        self._merge(batch)

    def _sampler(self, rows: Sequence[Row]) -> BatchSampler:
        return BatchSampler.build(
            [r.params for r in rows],
            [r.prompt for r in rows],
            [r.generated for r in rows],
            [r.generator for r in rows],
            vocab_size=self._vocab,
            device=self._device,
        )

    def _step(self) -> None:
        batch = self._batch
        assert batch is not None
        started = time.monotonic()
        ones = torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype, device=self._device)
        mask = torch.cat([batch.mask, ones], dim=1)
        out = self._model(
            input_ids=batch.next_tokens.unsqueeze(1),
            attention_mask=mask,
            position_ids=batch.positions.unsqueeze(1),
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.cache = out.past_key_values
        batch.mask = mask
        batch.positions = batch.positions + 1
        self._choose_and_emit(batch, out.logits[:, -1, :].to(self._device, torch.float32), started)
        self._compact()

    def _choose_and_emit(self, batch: Batch, logits: torch.Tensor, started: float) -> None:
        rows = batch.rows
        sampler = batch.sampler
        generated = torch.tensor([len(r.generated) for r in rows], device=self._device)
        scores = sampler.penalise(logits, generated)
        if any(r.pre for r in rows):
            scores = run_row_processors([r.pre for r in rows], [r.history() for r in rows], scores)
        scores = sampler.openai_penalties(scores)
        tokens = greedy_tokens(scores)
        if not bool(sampler.greedy.all()):
            warped = sampler.warp(scores)
            if any(r.post for r in rows):
                warped = run_row_processors(
                    [r.post for r in rows], [r.history() for r in rows], warped
                )
            drawn = sampler.draw(warped, self._generator)
            tokens = torch.where(sampler.greedy, tokens, drawn)
        sampler.observe(tokens)
        batch.next_tokens = tokens
        chosen = tokens.tolist()
        now = time.monotonic()
        events: dict[Job, list[Event]] = {}
        for row, token in zip(rows, chosen, strict=True):
            job = row.job
            row.generated.append(token)
            job.generated += 1
            if job.first_token_at is None:
                job.first_token_at = now
                self._observer.first_token(now - job.submitted)
            job_events = events.setdefault(job, [])
            job_events.append(TokenEvent(row.index, token))
            reason = None
            if token in row.params.eos_token_ids:
                reason = "stop"
            elif len(row.generated) >= row.params.max_new_tokens:
                reason = "length"
            if reason is not None:
                job_events.append(FinishEvent(row.index, reason))
                job.open_rows -= 1
                if job.open_rows == 0:
                    self._observer.request_done(now - job.submitted, job.generated)
        self._observer.step_done(len(rows), len(rows), now - started)
        for job, job_events in events.items():
            job.sink(job_events)

    # ---- batch bookkeeping -----------------------------------------------------------------

    def _merge(self, fresh: Batch) -> None:
        """Add freshly prefilled rows to the running batch (left-padding the shorter cache)."""
        new = self._without_finished(fresh)
        if new is None:
            return
        if self._batch is None:
            self._batch = new
            return
        append(self._batch, new)
        self._batch.sampler = self._sampler(self._batch.rows)

    def _without_finished(self, batch: Batch) -> Batch | None:
        keep = [
            i for i, row in enumerate(batch.rows) if not row.job.cancelled and not row_done(row)
        ]
        self._release_rows(batch.rows, keep)
        if not keep:
            return None
        if len(keep) == len(batch.rows):
            return batch
        select(batch, keep)
        if self._can_merge:
            trim(batch)
        batch.sampler = self._sampler(batch.rows)
        return batch

    def _release_rows(self, rows: list[Row], keep: list[int]) -> None:
        kept = set(keep)
        gone = [row for i, row in enumerate(rows) if i not in kept]
        if not gone:
            return
        for row in gone:
            if row.job.cancelled and not row_done(row):
                row.job.open_rows -= 1
                row.job.sink([FinishEvent(row.index, "abort")])
        with self._cv:
            self._running_rows -= len(gone)
            self._report_queue()

    def _compact(self) -> None:
        if self._batch is not None:
            self._batch = self._without_finished(self._batch)

    def _drop_cancelled(self) -> None:
        if self._batch is not None and any(r.job.cancelled for r in self._batch.rows):
            self._compact()

    def _fail_all(self, newcomers: list[Job], message: str) -> None:
        jobs = {r.job for r in self._batch.rows} if self._batch is not None else set()
        jobs.update(newcomers)
        self._batch = None
        with self._cv:
            self._running_rows = 0
            self._report_queue()
        for job in jobs:
            job.sink([ErrorEvent(message)])

    def _abort_everything(self) -> None:
        jobs = {r.job for r in self._batch.rows} if self._batch is not None else set()
        self._batch = None
        with self._cv:
            jobs.update(self._waiting)
            self._waiting.clear()
            self._running_rows = 0
        for job in jobs:
            job.sink([FinishEvent(i, "abort") for i in range(job.n)])

    # ---- beam-search thread ----------------------------------------------------------------

    def _run_beams(self) -> None:
        with torch.inference_mode():
            while True:
                job = self._beams.get()
                if job is None:
                    break
                with self._cv:
                    self._beams_pending -= 1
                    self._report_queue()
                if job.cancelled or self._stopping:
                    self._finish_job_unstarted(job)
                    continue
                try:
                    beam_search(
                        self._model,
                        job,
                        device=self._device,
                        pad_token_id=self._pad,
                        observer=self._observer,
                    )
                except Exception as exc:
                    log.exception("beam search failed")
                    job.sink([ErrorEvent(f"generation failed: {exc}")])
