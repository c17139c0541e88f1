# Two entry points (README): `make demo` runs the whole workflow on the embedded demo data,
# `make test` runs lint (ruff, snakemake --lint, the package map) and the test suite. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: demo test lint env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: env
	$(BIN)/snakemake --cores $(CORES)

lint: env
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint
	$(BIN)/lint-imports  # the package map: stage order, no import cycle (pyproject.toml [tool.importlinter])

test: lint
	$(BIN)/pytest

clean:
	rm -rf results logs .snakemake
