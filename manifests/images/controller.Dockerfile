# syntax=docker/dockerfile:1
# The controller image: the admission webhook (`python -m webhook`) and the reconciler
# (`python -m reconciler`), the two containers of the kaito-controller Deployment.
#
# Build from the repository root (the build context must be the root):
#   docker build -f manifests/images/controller.Dockerfile -t ghcr.io/kaito-py/controller:0.1.0 .
#
# Only the packages pinned (with hashes) in controller.requirements.txt are installed: no torch,
# transformers, peft or vllm (tests/install/test_images.py checks it). Runs as the non-root user
# 65532 with a read-only root filesystem; /tmp must be a writable volume (the Deployment mounts
# an emptyDir there).

# Python 3.11 (the project's tested version) on Debian 12, exact patch release.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY manifests/images/controller.requirements.txt /tmp/requirements.txt
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

WORKDIR /app
COPY api/ /app/api/
COPY certs/ /app/certs/
COPY webhook/ /app/webhook/
COPY reconciler/ /app/reconciler/

# Byte-compile now (the root filesystem is read-only at run time), prove the torch-free
# environment holds and that both commands the Deployment runs start.
RUN python -m compileall -q /app \
    && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'transformers', 'peft', 'vllm') if u.find_spec(m)]; sys.exit(f'ML packages in the controller image: {bad}' if bad else 0)" \
    && python -m webhook --help > /dev/null \
    && python -m reconciler --help > /dev/null

USER 65532:65532
EXPOSE 9443 8081
ENTRYPOINT ["python", "-m"]
CMD ["webhook"]
