# Two commands get a fresh clone working:  make serve   (the digits example, embedded mode)
#                                           make test    (the same set-up, then the test suite)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXAMPLE := examples/digits
EXAMPLE_BUILT := $(EXAMPLE)/archives/.built

.PHONY: serve test bench install lock example crds kube-tools clean

serve: $(EXAMPLE_BUILT)
	$(VENV)/bin/jointserve serve $(EXAMPLE) --file-server $(EXAMPLE)/archives

test: $(EXAMPLE_BUILT) kube-tools
	$(PY) -m pytest

# The benchmark runner (minutes; results in benchmarks/results/<date>/). ARGS=--quick for a short run.
bench: $(EXAMPLE_BUILT)
	$(PY) -m benchmarks $(ARGS)

install: $(VENV)/.installed

# Installs exactly what uv.lock pins (--locked also fails when pyproject.toml changed without
# a new lock),
# so two machines test the same ~110 packages; pyproject.toml keeps the ranges for users who
# install jointserve into an environment of their own. uv itself comes from PyPI as a wheel
# pinned by hash (tools/uv/requirements.txt) into a venv of its own, .venv-uv, so the project
# venv holds only what the lock says. After changing dependencies in pyproject.toml:
#   make lock      (re-resolve uv.lock; commit it with the change)
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never

$(UV): tools/uv/requirements.txt
	test -x $(UV_VENV)/bin/python || $(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet --require-hashes -r tools/uv/requirements.txt
	touch $@

$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV_ENV) $(UV) sync --locked --quiet --python $(PYTHON) --extra test --extra examples --extra train
	touch $@

lock: $(UV)
	$(UV_ENV) $(UV) lock --python $(PYTHON)

example: $(EXAMPLE_BUILT)

$(EXAMPLE_BUILT): $(VENV)/.installed $(EXAMPLE)/build.py $(EXAMPLE)/federated/build.py \
		$(EXAMPLE)/federated/train_softmax.py
	$(PY) $(EXAMPLE)/build.py
	touch $@

crds: $(VENV)/.installed
	$(VENV)/bin/jointserve crds --out deploy/crds

# The Kubernetes-mode tests run a real kube-apiserver + etcd and drive them with kubectl, all
# three built from the k8s.io/kubernetes Go module that tools/kube/go.mod pins. The binaries are
# cached outside the tree (~/.cache/jointserve/kube/<version>/): the first build compiles most of
# Kubernetes (measured: 254 s on 2 idle cores from empty Go caches, 875 s while other builds
# shared the cores), later runs only check that the cached binaries run (under a second).
# Phony on purpose: build.sh itself decides whether there is anything to do.
kube-tools:
	tools/kube/build.sh

clean:
	rm -rf $(VENV) $(UV_VENV) .jointserve $(EXAMPLE)/archives
