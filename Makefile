# Two commands get a fresh clone working:  make serve   (the digits example, embedded mode)
#                                           make test    (the same set-up, then the test suite)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXAMPLE := examples/digits
EXAMPLE_BUILT := $(EXAMPLE)/archives/.built

.PHONY: serve test bench install example crds kube-tools clean

serve: $(EXAMPLE_BUILT)
	$(VENV)/bin/jointserve serve $(EXAMPLE) --file-server $(EXAMPLE)/archives

test: $(EXAMPLE_BUILT) kube-tools
	$(PY) -m pytest

# The benchmark runner (minutes; results in benchmarks/results/<date>/). ARGS=--quick for a short run.
bench: $(EXAMPLE_BUILT)
	$(PY) -m benchmarks $(ARGS)

install: $(VENV)/.installed

# uv installs the ~100 packages of ray[serve] and onnxruntime in seconds instead of minutes;
# it comes from PyPI as a wheel, so nothing but Python is needed up front.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade uv
	$(VENV)/bin/uv pip install --python $(PY) --quiet -e '.[test,examples]'
	touch $@

example: $(EXAMPLE_BUILT)

$(EXAMPLE_BUILT): $(VENV)/.installed $(EXAMPLE)/build.py
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
	rm -rf $(VENV) .jointserve $(EXAMPLE)/archives
