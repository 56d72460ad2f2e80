# syntax=docker/dockerfile:1
# The vLLM runtime image: vLLM's own image with kaito-py's launcher (`python -m runtime.vllm`),
# which plans the vLLM arguments (parallelism, max-model-len, LoRA slots), starts vLLM and
# serves /chat in front of it. The reconciler runs it for Workspaces on the vllm runtime
# (the default).
#
# Build from the repository root:
#   docker build -f manifests/images/vllm.Dockerfile -t ghcr.io/kaito-py/vllm:0.1.0 .
#
# vLLM, torch and their dependencies are exactly those of the pinned base image (vllm==0.33.0,
# the version in requirements.lock); nothing is pip-installed on top. Pin the digest too where
# your registry policy demands it:
#   docker buildx imagetools inspect vllm/vllm-openai:v0.33.0   # prints the digest
#   docker build --build-arg VLLM_IMAGE=vllm/vllm-openai:v0.33.0@sha256:<digest> ...

ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0
FROM ${VLLM_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/home/kaito \
    HF_HOME=/home/kaito/.cache/huggingface

WORKDIR /app
# Only the vLLM launcher, the adapter code and the preset catalog the launcher plans from
# (api/, pure Python): not the transformers server.
COPY runtime/__init__.py runtime/py.typed /app/runtime/
COPY runtime/vllm/ /app/runtime/vllm/
# The /chat front's request parsing and planning, shared with the transformers runtime.
COPY runtime/server/__init__.py runtime/server/errors.py runtime/server/planning.py runtime/server/protocol.py runtime/server/sampling.py runtime/server/schema.py \
     /app/runtime/server/
COPY runtime/adapters/ /app/runtime/adapters/
COPY api/ /app/api/

# The reconciler's command starts with `python`; vLLM's image may only have `python3`.
RUN (command -v python > /dev/null || ln -s "$(command -v python3)" /usr/local/bin/python) \
    && python -c "import sys, vllm; v = vllm.__version__; sys.exit(0 if v == '0.33.0' else f'base image has vllm {v}, expected 0.33.0')" \
    && python -m compileall -q /app \
    && python -m runtime.vllm --help > /dev/null \
    && mkdir -p /home/kaito/.cache/huggingface \
    && chown -R 1000:1000 /home/kaito

USER 1000:1000
EXPOSE 5000
# vLLM's image starts `vllm serve`; the reconciler gives the full command instead.
ENTRYPOINT []
CMD ["python", "-m", "runtime.vllm", "--help"]
