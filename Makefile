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

# Debian packages the tests use for real: Slurm (slurmctld, slurmd, munge), shellcheck, and iproute2 for the
# two-host namespace cluster (util-linux's unshare/nsenter are on every Debian).
SYSTEM_PACKAGES := slurm-wlm munge shellcheck iproute2
SYSTEM_COMMANDS := slurmctld slurmd sbatch munged shellcheck ip

.PHONY: install system-deps test quick lint demo demo-foam clean

install: $(STAMP)

system-deps:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing; run as root or: apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; \
	  echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

# Re-run only when the venv is missing or broken, or pyproject.toml / this file changed.
$(STAMP): pyproject.toml Makefile
	@if ! $(PY) -c "import sys" >/dev/null 2>&1; then rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PIP) --upgrade pip $(QUIET)
	$(PIP) "$(TORCH)" $(QUIET)
	$(PIP) -e ".[dev,mpi]" $(QUIET)
	@touch $@

lint: install
	$(VENV)/bin/ruff check phasegan_hpc tests

test: install system-deps lint
	RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 $(PY) -m pytest --durations=25

# For iteration: the tests not marked slow (a few minutes); `make test` runs them all.
quick: install system-deps lint
	RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2 $(PY) -m pytest -m "not slow" -q

# Simulate a small data set, train PhaseGAN briefly on it, score it next to Paganin, write figures,
# run a 4-trial search of the loss weights, and reconstruct a simulated raw-detector movie archive.
demo: install
	$(CLI) simulate $(DEMO_DIR)/data --config configs/tiny.toml --overwrite --movie 256
	$(CLI) preview $(DEMO_DIR)/data --output $(DEMO_DIR)/preview.png
	rm -rf $(DEMO_DIR)/runs
	$(CLI) train --config configs/tiny.toml --data $(DEMO_DIR)/data --storage $(DEMO_DIR)/runs --name tiny
	$(CLI) evaluate --model $(DEMO_DIR)/runs/latest/model.pt --data $(DEMO_DIR)/data/validation.h5 \
		--baseline paganin --json $(DEMO_DIR)/evaluate.json
	$(CLI) tune --trials 4 --config configs/tiny.toml --data $(DEMO_DIR)/data --storage $(DEMO_DIR)/runs --name demo
	$(CLI) reconstruct $(DEMO_DIR)/data/movie.h5 --model $(DEMO_DIR)/runs/tiny/model.pt --batch-size 32 --overwrite
	$(MAKE) --no-print-directory demo-foam
	@echo "demo finished: $(DEMO_DIR)/preview.png, $(DEMO_DIR)/runs/tiny/figures/, $(DEMO_DIR)/evaluate.json,"
	@echo "  $(DEMO_DIR)/runs/tune-demo/ (trials.csv, best.toml, search.png),"
	@echo "  $(DEMO_DIR)/data/movie_phasegan.h5 and movie_phasegan.png (the reconstructed movie),"
	@echo "  $(DEMO_DIR)/foam-raw/shimadzu_movie_phasegan.gif/.png (the foam chain of paper §4)"

# Paper §4 at CPU size: simulated foam -> TIE object domain -> cross-resolution PhaseGAN -> reconstruct the
# held-out Shimadzu movie -> evaluate against the truth next to Paganin -> movie figure.
demo-foam: install
	$(CLI) simulate-foam $(DEMO_DIR)/foam-raw --config configs/foam-tiny.toml --overwrite
	$(CLI) tie $(DEMO_DIR)/foam-raw/photron.h5 --output $(DEMO_DIR)/foam/objects.h5 --resample-pixel-size-m 1.6e-6 --overwrite
	$(CLI) correct $(DEMO_DIR)/foam-raw/shimadzu.h5 --output $(DEMO_DIR)/foam/intensities.h5 --overwrite
	rm -rf $(DEMO_DIR)/runs/foam-tiny
	$(CLI) train --config configs/foam-tiny.toml --data $(DEMO_DIR)/foam --storage $(DEMO_DIR)/runs
	$(CLI) reconstruct $(DEMO_DIR)/foam-raw/shimadzu_movie.h5 --model $(DEMO_DIR)/runs/foam-tiny/model.pt --overwrite
	$(CLI) evaluate --model $(DEMO_DIR)/runs/foam-tiny/model.pt --data $(DEMO_DIR)/foam-raw/shimadzu_validation.h5 \
		--baseline paganin
	$(CLI) evaluate --data $(DEMO_DIR)/foam-raw/photron_validation.h5 --baseline paganin
	$(CLI) movie-figure $(DEMO_DIR)/foam-raw/shimadzu_movie.h5 $(DEMO_DIR)/foam-raw/shimadzu_movie_phasegan.h5 \
		--truth $(DEMO_DIR)/foam-raw/shimadzu_validation.h5

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
