# phasegan-hpc: `make test` and `make demo` do all set-up themselves, from a fresh clone.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
# Pinned: on a machine without CUDA this resolves to a CPU build (~2 GB venv); an unpinned torch pulls CUDA.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/phasegan-hpc
STAMP := $(VENV)/.phasegan-installed
PIP := $(PY) -m pip install --quiet
# pip warns about every absent local index directory named in this machine's pip config: drop that noise.
QUIET := 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }
DEMO_DIR ?= demo-out

export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install test lint demo clean

install: $(STAMP)

# Re-run only when the venv is missing or broken, or pyproject.toml / this file changed.
$(STAMP): pyproject.toml Makefile
	@if ! $(PY) -c "import sys" >/dev/null 2>&1; then rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PIP) --upgrade pip $(QUIET)
	$(PIP) "$(TORCH)" $(QUIET)
	$(PIP) -e ".[dev,mpi]" $(QUIET)
	@touch $@

lint: install
	$(VENV)/bin/ruff check phasegan_hpc tests

test: install lint
	$(PY) -m pytest

# Simulate a small data set, train PhaseGAN briefly on it, score it next to Paganin, write figures.
demo: install
	$(CLI) simulate $(DEMO_DIR)/data --config configs/tiny.toml --overwrite
	$(CLI) preview $(DEMO_DIR)/data --out $(DEMO_DIR)/preview.png
	rm -rf $(DEMO_DIR)/runs
	$(CLI) train --config configs/tiny.toml --data $(DEMO_DIR)/data --runs-dir $(DEMO_DIR)/runs --name tiny
	$(CLI) evaluate --model $(DEMO_DIR)/runs/latest/model.pt --data $(DEMO_DIR)/data/validation.h5 \
		--baseline paganin --json $(DEMO_DIR)/evaluate.json
	@echo "demo finished: $(DEMO_DIR)/preview.png, $(DEMO_DIR)/runs/tiny/figures/, $(DEMO_DIR)/evaluate.json"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
