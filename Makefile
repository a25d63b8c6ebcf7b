# One way to do each thing. `make run` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock | cksum | cut -d' ' -f1)
PORT ?= 8000

.PHONY: setup migrate demo run run-split test lint format chaos bench mutate clean lock

# Installs exactly the lock file: every package, transitive ones included, pinned with its
# hashes (pip refuses anything else). requirements*.txt list what we depend on directly;
# `make lock` writes the lock files from them.
$(STAMP): requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.X")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	@rm -f $(VENV)/.installed-*
	@touch $@

LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links

## Rewrite the lock files from requirements.txt (runtime) and requirements-dev.txt (+ tools),
## after changing a pin there: transitive dependencies resolved, every file's hash recorded.
## make lock ARGS="--upgrade-package kombu" moves one transitive dependency to its newest.
lock: setup
	$(PY) -m pip install --quiet --disable-pip-version-check pip-tools==7.6.2
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(ARGS) -o requirements.lock requirements.txt
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(ARGS) -o requirements-dev.lock requirements-dev.txt

setup: $(STAMP)

migrate: setup
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo

## Run every process of the Procfile (web on http://127.0.0.1:$(PORT)/) on the embedded defaults,
## or on whatever DATABASE_URL and CELERY_BROKER_URL say.
run: demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" honcho start --port $(PORT) -f Procfile

## The split deployment (Procfile.split): the shop, payments and notifications services, each with
## its own PostgreSQL database and Redis broker, events between them over RabbitMQ. Creates the databases,
## runs the release step (migrations, the bus's queues), seeds the demo, then starts every process.
## Any of these variables may be set to point it elsewhere (EVENT_BUS_URL=nats://... for NATS).
SPLIT_ENV = \
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop_split} \
	PAYMENTS_DATABASE_URL=$${PAYMENTS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop_split_payments} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0} \
	PAYMENTS_CELERY_BROKER_URL=$${PAYMENTS_CELERY_BROKER_URL:-redis://127.0.0.1:6379/1} \
	NOTIFICATIONS_DATABASE_URL=$${NOTIFICATIONS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop_split_notifications} \
	NOTIFICATIONS_CELERY_BROKER_URL=$${NOTIFICATIONS_CELERY_BROKER_URL:-redis://127.0.0.1:6379/2} \
	EVENT_BUS_URL=$${EVENT_BUS_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}
SPLIT_PROCESSES = web worker relay beat consumer payments-worker payments-relay payments-beat \
	payments-consumer notifications-worker notifications-relay notifications-beat \
	notifications-consumer

run-split: setup
	$(SPLIT_ENV) $(PY) scripts/split_databases.py
	$(SPLIT_ENV) SHOP_SERVICE=shop $(PY) manage.py release
	$(SPLIT_ENV) SHOP_SERVICE=shop $(PY) manage.py seed_demo
	$(SPLIT_ENV) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" honcho start --port $(PORT) -f Procfile.split \
		$(SPLIT_PROCESSES)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## The whole suite: lint, then pytest on SQLite + the embedded broker, then on PostgreSQL +
## Redis (skipped with a notice when they are not reachable, a failure when CI is set).
test: lint
	$(PY) scripts/test_passes.py

## Fault injection against the real processes on PostgreSQL + Redis (docs/chaos.md).
## make chaos ARGS="--orders 5000"; the split deployment: make chaos ARGS="--split --orders 300"
chaos: setup
	$(PY) scripts/chaos.py $(ARGS)

## Benchmarks on PostgreSQL + Redis: one table, figures to var/bench/ (docs/benchmarks.md).
bench: setup
	$(PY) bench/run.py $(ARGS)

## Mutation testing of outbox/ and the payments and inventory services (slow; outside CI):
## the report goes to var/mutate/report.txt (docs/outbox.md). make mutate ARGS='"outbox.relay*"'
mutate: setup
	$(PY) scripts/mutate.py $(ARGS)

clean:
	rm -rf $(VENV) var mutants .pytest_cache .ruff_cache
