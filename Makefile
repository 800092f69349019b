# Two commands matter: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PGHOST ?= 127.0.0.1
PGPORT ?= 5432
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
export PGHOST PGPORT REDIS_HOST REDIS_PORT

# Tests and benchmarks run on real PostgreSQL and Redis (override with the usual variables).
SERVICES_ENV = DATABASE_URL=$${DATABASE_URL:-postgres://postgres@$(PGHOST):$(PGPORT)/notifier} \
	REDIS_URL=$${REDIS_URL:-redis://$(REDIS_HOST):$(REDIS_PORT)/15} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-redis://$(REDIS_HOST):$(REDIS_PORT)/15}
BENCH_ENV = DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@$(PGHOST):$(PGPORT)/notifier_bench} \
	REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT)/14 \
	CELERY_BROKER_URL=redis://$(REDIS_HOST):$(REDIS_PORT)/14

.PHONY: install demo test lint typecheck pytest bench screenshots chromium kubectl services clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## The demo on the embedded default: SQLite, in-memory broker, in-process worker, sandboxes.
demo: install
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python manage.py demo

## Lint, type-check and the whole test suite on real PostgreSQL, Redis and worker processes.
test: install services chromium kubectl lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(SERVICES_ENV) $(BIN)/mypy notifier channels campaigns notifier_site

pytest: install services
	$(SERVICES_ENV) $(BIN)/python -m pytest

services:
	@scripts/ensure-services

## Throughput and latency of the pipeline against a naive baseline, on PostgreSQL + Redis.
bench: install services
	@[ -n "$${BENCH_DATABASE_URL:-}" ] || createdb -h $(PGHOST) -p $(PGPORT) -U postgres notifier_bench 2>/dev/null || true
	$(BENCH_ENV) $(BIN)/python manage.py bench $(BENCH_ARGS)

## The README's admin screenshots, taken by headless Chromium on a throwaway database.
DOCS_DB ?= notifier_docs
screenshots: install services chromium
	dropdb --if-exists -h $(PGHOST) -p $(PGPORT) -U postgres $(DOCS_DB)
	createdb -h $(PGHOST) -p $(PGPORT) -U postgres $(DOCS_DB)
	env -u CELERY_BROKER_URL DATABASE_URL=postgres://postgres@$(PGHOST):$(PGPORT)/$(DOCS_DB) \
		REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT)/13 $(BIN)/python manage.py screenshots

## Debian's Chromium for Playwright (never Playwright's own browser download).
chromium:
	@scripts/ensure-chromium

## Debian's kubectl for the deploy tests; without it (no root) that one test skips, except in CI.
kubectl:
	@scripts/ensure-kubectl || echo "no kubectl: the kustomize test will skip (and fail under NOTIFIER_TESTS_STRICT=1)"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
