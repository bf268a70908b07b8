# Orchestra: `make run` to try it, `make test` to test it. See README.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
WEB_CONCURRENCY ?= 2
# Celery worker processes: one per core, each running hundreds of turns on its event loop.
# Threads, not prefork: Celery's prefork closes the database pool after every task, which
# the turns its runner still runs are using.
WORKER_PROCESSES ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install run run-stack stack-env migrate demo test lint format check clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements/base.txt requirements/dev.txt
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demo_data
	$(BIN)/python manage.py ensure_admin

## Embedded default: SQLite under var/, in-process workers, no other service needed.
run: demo
	@echo "Orchestra on http://$(HOST):$(PORT)/admin/"
	$(BIN)/uvicorn orchestra_site.asgi:application --host $(HOST) --port $(PORT) --no-access-log

## Full stack: web, Celery worker and beat against DATABASE_URL / REDIS_URL.
## Metrics of every process are gathered in one place (prometheus_client multiprocess mode).
run-stack: stack-env demo
	@export PROMETHEUS_MULTIPROC_DIR="$(CURDIR)/var/prometheus"; \
	rm -rf "$$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$$PROMETHEUS_MULTIPROC_DIR"; \
	trap 'kill 0' INT TERM EXIT; \
	for i in $$(seq 1 $(WORKER_PROCESSES)); do \
		$(BIN)/celery -A orchestra_site worker --pool threads --concurrency 4 \
			--hostname worker$$i@%h --loglevel INFO & \
	done; \
	$(BIN)/celery -A orchestra_site beat --loglevel INFO --schedule var/celerybeat-schedule & \
	$(BIN)/uvicorn orchestra_site.asgi:application --host $(HOST) --port $(PORT) \
		--workers $(WEB_CONCURRENCY) --no-access-log & \
	wait

stack-env:
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || { echo "Set DATABASE_URL and REDIS_URL"; exit 2; }

## The whole suite, against the local PostgreSQL and Redis (tests/settings.py).
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint
	$(BIN)/mypy
	env -u DATABASE_URL -u REDIS_URL ORCHESTRA_DATA_DIR=$$(mktemp -d) \
		$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache staticfiles
