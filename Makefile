# Two commands get a fresh clone working:  make serve   (the digits example, embedded mode)
#                                           make test    (the same set-up, then the test suite)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXAMPLE := examples/digits
EXAMPLE_BUILT := $(EXAMPLE)/archives/.built

.PHONY: serve test install example crds clean

serve: $(EXAMPLE_BUILT)
	$(VENV)/bin/jointserve serve $(EXAMPLE) --file-server $(EXAMPLE)/archives

test: $(EXAMPLE_BUILT)
	$(PY) -m pytest

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

clean:
	rm -rf $(VENV) .jointserve $(EXAMPLE)/archives
