PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint clean

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tfrec-attn train --config pipelines/configs/demo.yaml --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check tfrec_attn pipelines tests

# Two pytest workers, one test file each at a time (module fixtures are built once): most tests
# are Python-bound (tracing, conversion), so two processes keep both cores busy.
PYTEST_WORKERS ?= 2

test: $(STAMP) lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-all: $(STAMP) lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "slow or not slow"

clean:
	rm -rf $(VENV) runs build *.egg-info
