"""What the engine needs to generate one sequence: the per-row sampling parameters.

These are the engine's own types, independent of the wire formats: ``/chat`` (Hugging Face
``generate`` kwargs) and the OpenAI endpoints are both translated into them by pure planning
functions (``planning.py``). Everything here is already checked: bounds, token ids inside the
vocabulary, lengths inside the context window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """Per-row decoding parameters, applied in the order of ``transformers``' ``generate``.

    Greedy rows (``do_sample`` false) take the arg-max of the processed scores; sampling rows apply
    temperature, top-k, top-p, min-p and typical-p, in that order, and draw from the result.
    """

    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    encoder_no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    remove_invalid_values: bool = False
    eos_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def needs_row_processors(self) -> bool:
        """Whether a row needs ``transformers``' own (per-row) logits processors."""
        return bool(
            self.no_repeat_ngram_size
            or self.encoder_no_repeat_ngram_size
            or self.bad_words_ids
            or self.forced_bos_token_id is not None
            or self.forced_eos_token_id is not None
            or self.remove_invalid_values
            or (self.do_sample and self.typical_p < 1.0)
        )


@dataclass(frozen=True)
class BeamParams:
    """Beam search, which the batched decode loop does not do: it runs as one ``generate`` call.

    ``generate_kwargs`` are checked keyword arguments for ``model.generate`` (no tensors).
    """

    generate_kwargs: tuple[tuple[str, object], ...]
    num_return_sequences: int

    def kwargs(self) -> dict[str, object]:
        return dict(self.generate_kwargs)
