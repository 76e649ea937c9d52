# Quick start: `make bench` runs the smoke tier and prints the tables; `make test` runs the tests.
# Each target sets up .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: on a CPU-only machine this is the CPU build; elsewhere PyPI's default build.
# Pip arguments may follow: TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
EXTRAS ?= deepspeed,compression,plots,dev
BENCH_ARGS ?=

.PHONY: setup bench test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m bench.cli set-up || echo "warning: archbench set-up failed; the cases that need it will say why"  # DeepSpeed's CPU comm op, once (minutes)
	touch $@

bench: setup
	mkdir -p results
	$(PY) -m pytest bench --benchmark-only --tier smoke --benchmark-json results/bench.json $(BENCH_ARGS)

test: setup
	$(PY) -m pytest tests -q -m "not nightly"

test-all: setup
	$(PY) -m pytest tests -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) results .benchmarks
