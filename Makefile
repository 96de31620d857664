# Common commands. `make run` / `make test` build .venv and install everything first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed first and pinned to the versions this project is
# tested with (on the project's machines pip takes them from local disk); override with
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=

.PHONY: install run test lint format check-wheel bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,parallel,slurm,tracking]"
	touch $@

install: $(VENV)/.installed

# The seed's comparison (none / prune 0.2 / quantize 4 bit / noise) as one sweep; its
# summary.csv, comparison.png and curves.png land in multirun/<date>/<time>/.
run: install
	$(PY) -m gradinv_exp +experiment=seed_defenses $(ARGS)

# Two workers: one per core, each test process on one torch thread. ARGS are pytest's:
# `make test ARGS=tests/test_cli.py` runs one file.
test: install
	$(PY) -m pytest -n 2 $(ARGS)

# The README's performance figures: framework overhead, then batched trials (minutes).
bench: install
	$(PY) scripts/bench_attack.py
	$(PY) scripts/bench_trials.py

# Build the wheel, install it into a fresh virtual environment (reusing .venv's torch) and run it
# from a temporary folder outside the repo, the plugin example included (.ci/run runs this).
check-wheel: install
	PYTHON=$(PY) scripts/check_wheel.sh

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
