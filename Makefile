# Tollway — `make help` lists every target.
# The virtual environment is built by uv from uv.lock; uv itself is installed into
# .tools/ with pip when it is not on PATH.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
SYNCED := $(VENV)/.synced
RUN := $(UV) run --frozen --no-sync
PYTEST_WORKERS ?= auto

.PHONY: help run test test-postgres system-deps check format lint typecheck bench contract migrate demo worker clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(SYNCED): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

run: $(SYNCED) ## Start Tollway on embedded SQLite with the demo catalog (http://127.0.0.1:8000)
	TOLLWAY_LOAD_DEMO=$${TOLLWAY_LOAD_DEMO:-true} $(RUN) tollway serve

# The suite reads invoice PDFs back with poppler's pdftotext, as a customer's viewer would.
system-deps: ## Install the system tools the suite uses (pdftotext) when missing
	@command -v pdftotext >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq poppler-utils >/dev/null || { apt-get update -qq && apt-get install -y -qq poppler-utils; }; \
	  else echo "make test needs pdftotext: install poppler-utils" >&2; exit 1; fi; }

test: $(SYNCED) system-deps ## Run the whole test suite (SQLite; PostgreSQL/Redis when TOLLWAY_TEST_* are set)
	$(RUN) pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-postgres: $(SYNCED) system-deps ## Run the suite on the local PostgreSQL and Redis
	TOLLWAY_TEST_DATABASE_URL=$${TOLLWAY_TEST_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test} \
	TOLLWAY_TEST_REDIS_URL=$${TOLLWAY_TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	$(RUN) pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

check: $(SYNCED) ## What CI checks: ruff format --check, ruff, mypy
	$(RUN) ruff format --check src tests bench tools
	$(RUN) ruff check src tests bench tools
	$(RUN) mypy

format: $(SYNCED) ## Format and auto-fix the code
	$(RUN) ruff format src tests bench tools
	$(RUN) ruff check --fix src tests bench tools

bench: $(SYNCED) ## Run the benchmarks; results go to bench/results/*.json
	$(RUN) python -m bench $(BENCH_ARGS)

contract: $(SYNCED) ## Run schemathesis against a served Tollway (token and API key; about 3 minutes)
	$(RUN) python -m tools.contract

migrate: $(SYNCED) ## Apply database migrations (TOLLWAY_DATABASE_URL)
	$(RUN) tollway db upgrade

demo: $(SYNCED) ## Load the demo catalog, accounts and packages
	$(RUN) tollway demo

worker: $(SYNCED) ## Run the background sweeps in the foreground
	$(RUN) tollway worker

clean: ## Remove the virtual environment, caches and local data
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache var tollway.db tollway.db-*
