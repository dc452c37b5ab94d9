# The two commands: `make run` (everything, embedded defaults) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SIMULATE ?= 2
HOST ?= 127.0.0.1
PORT ?= 8000
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run test test-serial install install-dev lint vendor bench-smoke clean

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
	IOPS_TESTING=1 $(BIN)/mypy

# Two passes at once (the machine has 2 cores and each pass waits on sockets and subprocesses much of the
# time): SQLite (embedded default) for everything but the browser/Redis/process tests, and the whole suite on
# PostgreSQL except the tests that run the app in subprocesses on a SQLite file of their own (the SQLite pass
# runs them). Separate var dirs and databases; every test server takes a free port. The SQLite pass writes
# to var/test-sqlite.log, printed when both are done; the target fails if either pass fails.
SQLITE_PASS = IOPS_TESTING=1 IOPS_VAR_DIR=$(CURDIR)/var/test-sqlite $(BIN)/pytest -q -m "not browser and not redis and not postgres"
PG_PASS     = IOPS_TESTING=1 IOPS_VAR_DIR=$(CURDIR)/var/test-pg DATABASE_URL=$(PG_TEST_URL) $(BIN)/pytest -q -m "not embedded"
test: install-dev lint
	@mkdir -p var; \
	echo "SQLite pass running alongside, output in var/test-sqlite.log"; \
	( $(SQLITE_PASS) > var/test-sqlite.log 2>&1 ) & sqlite_pid=$$!; \
	echo "== PostgreSQL pass =="; $(PG_PASS); pg_rc=$$?; \
	wait $$sqlite_pid; sqlite_rc=$$?; \
	echo "== SQLite pass =="; cat var/test-sqlite.log; \
	echo "PostgreSQL pass exit $$pg_rc, SQLite pass exit $$sqlite_rc"; \
	[ $$pg_rc -eq 0 ] && [ $$sqlite_rc -eq 0 ]

# One pass at a time, the same tests (slower; for a machine where the two at once are too tight).
test-serial: install-dev lint
	$(SQLITE_PASS)
	$(PG_PASS)

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
	$(BENCH) bench/signal_quality.py --smoke

vendor:
	cd /tmp && rm -rf iops-vendor && mkdir iops-vendor && cd iops-vendor && npm init -y >/dev/null && \
	  npm install --no-audit --no-fund htmx.org@2.0.11 htmx-ext-ws@2.0.4 chart.js@4.6.1 >/dev/null
	cp /tmp/iops-vendor/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp /tmp/iops-vendor/node_modules/htmx-ext-ws/ws.js static/vendor/htmx-ext-ws.js
	cp /tmp/iops-vendor/node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js

clean:
	rm -rf $(VENV) var
