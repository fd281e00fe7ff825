# One entry point for the checks: `make check` runs ruff, mypy --strict and the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install check lint typecheck test soak bench

install:
	python3 -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'

check: lint typecheck test

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy --strict signwave

# Tests mostly wait on subprocesses and services: three at a time fill two cores.
test:
	$(BIN)/pytest -n 3

# make soak SOAK_ARGS="--soak-db postgresql --soak-minutes 5"
soak:
	$(BIN)/pytest tests/chaos -m soak --soak -p no:randomly $(SOAK_ARGS)

bench:
	$(BIN)/python -m bench.throughput
