# The README's two commands are `make demo` and `make test`; each runs `make setup` first.
SHELL := /bin/bash
SYSTEM_PYTHON := $(shell command -v python3)
UV ?= $(SYSTEM_PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup protos lint type test unit integration demo serve up bench clean

setup: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock clients/python/pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(SYSTEM_PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --quiet
	@touch $@

protos: setup
	scripts/gen_protos.sh

lint: setup
	buf lint
	buf format --diff --exit-code
	ruff check .
	ruff format --check .

type: setup
	mypy

test: setup lint type
	pytest --cov --cov-report=term --cov-report=xml -q

unit: setup
	pytest tests/unit -q

integration: setup
	pytest tests/integration -q

demo: setup
	scripts/demo.sh

serve up: setup
	llmops up

bench: setup
	python bench/registry_reads.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache coverage.xml .coverage
