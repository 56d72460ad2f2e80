# syntax=docker/dockerfile:1
# The transformers runtime image: `python -m runtime.server` (the /chat and OpenAI-compatible
# server with LoRA adapters merged at their strength), run by the reconciler in inference Pods
# of Workspaces annotated `kaito.sh/runtime: transformers`.
#
# Build from the repository root:
#   docker build -f manifests/images/transformers.Dockerfile \
#     -t ghcr.io/kaito-py/transformers:0.1.0 .
#
# torch, transformers and peft come pinned with hashes from transformers.requirements.txt (a
# subset of requirements.lock). PyPI's torch 2.14.0 wheel is built for CUDA 13: the GPU nodes
# need an NVIDIA driver that supports CUDA 13 (R580 or newer) and a GPU of compute capability
# 7.5 or more; CUDA 13 dropped Volta (V100). See manifests/images/README.md.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/kaito \
    HF_HOME=/home/kaito/.cache/huggingface

COPY manifests/images/transformers.requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

WORKDIR /app
# Only the transformers server and the adapter code: not the vLLM launcher.
COPY runtime/__init__.py runtime/py.typed runtime/openapi.json /app/runtime/
COPY runtime/server/ /app/runtime/server/
COPY runtime/adapters/ /app/runtime/adapters/
# The settings declaration module the runtime's settings are built from (api/ is pure: no I/O).
COPY api/__init__.py api/settings_spec.py /app/api/

RUN python -m compileall -q /app \
    && python -m runtime.server --help > /dev/null \
    && mkdir -p /home/kaito/.cache/huggingface \
    && chown -R 1000:1000 /home/kaito

# Models are downloaded into HF_HOME (mount a volume there to keep them across restarts).
USER 1000:1000
EXPOSE 5000
ENTRYPOINT []
CMD ["python", "-m", "runtime.server", "--help"]
