# The two commands: `make run` (everything, embedded defaults) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SIMULATE ?= 2
HOST ?= 127.0.0.1
PORT ?= 8000
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run test install install-dev lint vendor bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py bootstrap
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT) --simulate $(if $(filter 0,$(SIMULATE)),0,$(SIMULATE))

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# SQLite (embedded default) for everything but the browser/Redis/process tests, then the whole suite on
# PostgreSQL except the tests that run the app in subprocesses on a SQLite file of their own (the first pass ran them).
test: install-dev lint
	IOPS_TESTING=1 IOPS_VAR_DIR=$(CURDIR)/var/test-sqlite $(BIN)/pytest -q -m "not browser and not redis and not postgres"
	IOPS_TESTING=1 IOPS_VAR_DIR=$(CURDIR)/var/test-pg DATABASE_URL=$(PG_TEST_URL) $(BIN)/pytest -q -m "not embedded"

# Every benchmark's --smoke mode (tiny sizes, a few seconds to a minute each): keeps bench/ from rotting,
# measures nothing. Needs PostgreSQL and Redis on 127.0.0.1 like the second pass of `make test`.
BENCH := IOPS_TESTING=1 $(BIN)/python
bench-smoke: install-dev
	$(BENCH) bench/ingest.py --smoke
	$(BENCH) bench/aggregate.py --smoke
	$(BENCH) bench/growth.py --smoke
	$(BENCH) bench/alerts_eval.py --smoke
	$(BENCH) bench/history.py --smoke
	$(BENCH) bench/page.py --smoke
	$(BENCH) bench/ops.py --smoke
	$(BENCH) bench/e2e.py --smoke
	$(BENCH) bench/scaling.py --smoke
	$(BENCH) bench/sustained.py --smoke

vendor:
	cd /tmp && rm -rf iops-vendor && mkdir iops-vendor && cd iops-vendor && npm init -y >/dev/null && \
	  npm install --no-audit --no-fund htmx.org@2.0.11 htmx-ext-ws@2.0.4 chart.js@4.6.1 >/dev/null
	cp /tmp/iops-vendor/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp /tmp/iops-vendor/node_modules/htmx-ext-ws/ws.js static/vendor/htmx-ext-ws.js
	cp /tmp/iops-vendor/node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js

clean:
	rm -rf $(VENV) var
