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

.PHONY: install lock demo test lint typecheck pytest pytest-second-python bench screenshots chromium kubectl services clean

# Exact versions, with hashes, from the lock files (requirements/, written by `make lock`); the
# project itself goes in editable on top, without resolving anything again.
define install-locked
	$(1) -m venv $(2)
	$(2)/bin/pip install --quiet --upgrade pip
	$(2)/bin/pip install --quiet --require-hashes -r requirements/dev.txt
	$(2)/bin/pip install --quiet --no-deps -e .
endef

$(VENV)/.installed: requirements/dev.txt pyproject.toml
	$(call install-locked,$(PYTHON),$(VENV))
	touch $@

install: $(VENV)/.installed

## Re-resolve the lock files after a change to pyproject.toml, keeping every pin that still
## fits; `make lock UPGRADE=1` moves everything to the newest releases the ranges allow,
## `make lock UPGRADE_PACKAGE=celery` only that package (and what it needs). One
## universal lock per role, valid on Python 3.11 to 3.13: requirements/dev.txt (tests, CI,
## the demo: every extra) and requirements/deploy.txt (the Docker image: the same versions,
## without the test tools).
LOCK_PY ?= 3.11
LOCK_ARGS = --universal --python-version $(LOCK_PY) --generate-hashes --quiet \
	$(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock: export UV_CUSTOM_COMPILE_COMMAND = make lock
lock: install
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) --all-extras -o requirements/dev.txt
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) --extra sms --extra push --extra deploy \
		-c requirements/dev.txt -o requirements/deploy.txt

## The demo on the embedded default: SQLite, in-memory broker, in-process worker, sandboxes.
demo: install
	env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_URL $(BIN)/python manage.py demo

## Lint, type-check and the whole test suite on real PostgreSQL, Redis and worker processes.
test: install services chromium kubectl lint typecheck pytest pytest-second-python

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(SERVICES_ENV) $(BIN)/mypy notifier channels campaigns notifier_site

pytest: install services
	$(SERVICES_ENV) $(BIN)/python -m pytest

## The newest Python the package supports, from the same lock: the pure policy tests, the
## service tests on PostgreSQL and the providers against their faked HTTP APIs (a few minutes;
## the worker, browser and security suites run on 3.11 only). SECOND_PY=3.12 for another one;
## SECOND_PYTHON=/path/to/python to name the interpreter.
SECOND_PY ?= 3.13
SECOND_PYTHON ?= $(firstword $(wildcard /root/.pyenv/versions/$(SECOND_PY).*/bin/python) \
	$(shell command -v python$(SECOND_PY)))
SECOND_VENV ?= .venv-$(SECOND_PY)
SECOND_PYTHON_TESTS ?= tests/notifier/policies tests/notifier/services tests/campaigns/services \
	tests/channels

$(SECOND_VENV)/.installed: requirements/dev.txt pyproject.toml
	@[ -n "$(SECOND_PYTHON)" ] || { echo "no Python $(SECOND_PY) found: set SECOND_PYTHON=/path/to/python$(SECOND_PY)"; exit 1; }
	$(call install-locked,$(SECOND_PYTHON),$(SECOND_VENV))
	touch $@

pytest-second-python: $(SECOND_VENV)/.installed services
	$(SECOND_VENV)/bin/python -c 'import sys; assert sys.version.startswith("$(SECOND_PY)."), sys.version'
	$(SERVICES_ENV) $(SECOND_VENV)/bin/python -m pytest -p no:cacheprovider $(SECOND_PYTHON_TESTS)

services:
	@scripts/ensure-services

## Throughput and latency of the pipeline against a naive baseline, on PostgreSQL + Redis.
bench: install services
	@[ -n "$${BENCH_DATABASE_URL:-}" ] || createdb -h $(PGHOST) -p $(PGPORT) -U postgres notifier_bench 2>/dev/null || true
	$(BENCH_ENV) $(BIN)/python manage.py bench $(BENCH_ARGS)

## The README's admin screenshots, taken by headless Chromium on a throwaway database.
DOCS_DB ?= notifier_docs
DOCS_REDIS_DB ?= 13
screenshots: install services chromium
	dropdb --if-exists -h $(PGHOST) -p $(PGPORT) -U postgres $(DOCS_DB)
	createdb -h $(PGHOST) -p $(PGPORT) -U postgres $(DOCS_DB)
	env -u CELERY_BROKER_URL DATABASE_URL=postgres://postgres@$(PGHOST):$(PGPORT)/$(DOCS_DB) \
		REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT)/$(DOCS_REDIS_DB) $(BIN)/python manage.py screenshots

## Debian's Chromium for Playwright (never Playwright's own browser download).
chromium:
	@scripts/ensure-chromium

## Debian's kubectl for the deploy tests; without it (no root) that one test skips, except in CI.
kubectl:
	@scripts/ensure-kubectl || echo "no kubectl: the kustomize test will skip (and fail under NOTIFIER_TESTS_STRICT=1)"

clean:
	rm -rf $(VENV) .venv-3.* var .pytest_cache .mypy_cache .ruff_cache
