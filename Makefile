# The two commands a fresh clone needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# The suite runs on every core: most end-to-end tests wait on brokers and subprocesses.
# loadfile: a file's tests run on one worker, in order (a docs page's blocks share a sandbox).
# `make test PYTEST_ARGS="tests/core -x"` runs a part of it (in one process).
PYTEST_ARGS ?= -n auto --dist loadfile
PACKAGES := felix_proto felix_core felix_server felix_runtime felix_runtime_asyncio felix_runtime_anyio felix_client conformance

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/felix-broker $(ARGS)

test: $(STAMP_TEST)
	$(BIN)/ruff check $(PACKAGES) tests benchmarks scripts examples
	$(BIN)/ruff format --check $(PACKAGES) tests benchmarks scripts examples
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(BIN)/ruff check $(PACKAGES) tests benchmarks scripts examples
	$(BIN)/ruff format --check $(PACKAGES) tests benchmarks scripts examples

typecheck: $(STAMP_TEST)
	$(BIN)/mypy $(PACKAGES)

bench: $(STAMP_RUN)
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
