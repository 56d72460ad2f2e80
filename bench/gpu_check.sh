#!/usr/bin/env bash
# GPU check of the transformers runtime (runtime.server): CUDA, float16, one LoRA adapter merged at
# strength 0.5; greedy parity of the batching engine; the serving benchmark at 1, 16 and 64
# clients against the one-at-a-time pipeline server and offline batched generate.
#
#   OUT=/path/to/results bash bench/gpu_check.sh        # from the repository root
#
# Needs: an NVIDIA GPU, the project's Python environment (PYTHON, default `python`, with the
# runtime and dev extras), no network (the model and the adapter are built locally).
# Writes to $OUT: env.txt, nvidia-smi.txt, parity.txt, serving_gpu.{txt,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to a folder for the results}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$OUT/env.txt"

# The 21M-parameter bench Llama (built from local text, cached) and one adapter for it.
MODEL="$("$PY" -m tests.support.tiny_model bench | tail -n 1)"
ADAPTERS="$OUT/adapters"
"$PY" - "$MODEL" "$ADAPTERS" <<'PYEOF'
import sys
from pathlib import Path
from tests.support.tiny_adapters import make_lora_adapter
make_lora_adapter(
    Path(sys.argv[1]), Path(sys.argv[2]) / "gpu-adapter",
    r=8, lora_alpha=16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), seed=0,
)
PYEOF

# Greedy parity of batched rows with a lone generate (informative in float16).
"$PY" bench/engine_parity.py --model "$MODEL" --device cuda --dtype float16 2>&1 | tee "$OUT/parity.txt"

# The benchmark: (a) our server with the adapter, (b) pipeline one at a time, (c) offline generate.
"$PY" bench/serving_bench.py --model "$MODEL" --device cuda --dtype float16 --threads 0 \
    --clients 1,16,64 --headline 16,64 --rounds 3 \
    --adapter gpu-adapter=0.5 --adapter-root "$ADAPTERS" \
    --json "$OUT/serving_gpu.json" --plot "$OUT/serving_gpu.png" 2>&1 | tee "$OUT/serving_gpu.txt"
echo "results in $OUT"
