# Two entry points (README): `make demo` runs the whole workflow on the embedded demo data,
# `make test` runs lint (ruff, snakemake --lint, the package map), the documentation build and the
# test suite. Both create the virtual environment first. `make docs` builds the documentation site
# (docs/, mkdocs.yml) into site/; --strict makes a broken link or anchor an error.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: demo test lint docs env clean

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

docs: env
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint docs
	$(BIN)/pytest

clean:
	rm -rf results logs .snakemake
