# FlowPilot Analytics. A newcomer needs two targets: `make run` and `make test`.
# Both create the virtualenv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# `make run` serves the SQLite demo unless RUN_DATABASE_URL names another database.
RUN_DATABASE_URL ?=
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k api -x"`.
PYTEST_ARGS ?=
# `make loadtest`: the PostgreSQL database (as its owner) the load test creates, fills and serves.
LOAD_OWNER_URL ?= postgres://postgres@127.0.0.1:5432/flowpilot_load
# `make bench` builds its data in, and measures, this PostgreSQL database
# (created if missing; its name must contain "bench"). Not part of `make test`.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/flowpilot_bench
# e.g. `make bench BENCH_ARGS="--quick --skip-indexes"`
BENCH_ARGS ?=

.DEFAULT_GOAL := help
# `make host-smoke`: the wheel in a fresh host project (scripts/host_smoke.py), on SQLite,
# and on PostgreSQL too when HOST_SMOKE_DATABASE_URL names a database (created afresh).
HOST_DIR ?= examples/host
HOST_SETTINGS ?= host.settings
HOST_RLS_SETTINGS ?= host.settings_rls
HOST_SMOKE_DATABASE_URL ?=
# `make host-smoke-models`: the monolith variant with its own models (examples/host_models), whose
# answers to the shared scenario must equal examples/host's (the app's own models).
MODELS_HOST_SMOKE_DATABASE_URL ?=

.PHONY: help run test test-sqlite test-postgres check clean loadtest loadtest-throttle bench host-smoke host-smoke-models wheel

help:
	@echo "make run    - install, migrate, load demo data and serve http://$(HOST):$(PORT)/ (SQLite; the dashboard and the API)"
	@echo "make test   - the whole suite on SQLite, and on PostgreSQL too when DATABASE_URL is set"
	@echo "make host-smoke - build the wheel, install it in a fresh host project, run its smoke suite"
	@echo "make host-smoke-models - the same for a monolith with its own models, compared with the app's"
	@echo "make standby-test - the read router against a real streaming standby (two throwaway clusters)"
	@echo "make loadtest - bounded load test on loopback (gunicorn, PostgreSQL, demo data): docs/load-test.md"
	@echo "make loadtest-throttle - the throttle on a 2-worker gunicorn, with Redis and without: docs/load-test.md"
	@echo "make export-load - the CSV export's peak RSS and time at 10k, 100k, 250k rows: docs/load-test.md"
	@echo "make served-check - Schemathesis (Accept: text/html) and killed connections against the served app: no 5xx"
	@echo "make bench  - benchmark the metric on PostgreSQL (BENCH_DATABASE_URL), results in docs/benchmarks.md"
	@echo "make clean  - remove the virtualenv, the SQLite database and caches"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The app as an editable install with its `dev` extra (pyproject.toml): runtime, demo, tests, build.
$(VENV)/.installed: pyproject.toml requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

run: $(VENV)/.installed
	DATABASE_URL="$(RUN_DATABASE_URL)" $(BIN)/python manage.py migrate --noinput
	DATABASE_URL="$(RUN_DATABASE_URL)" $(BIN)/python manage.py seed_demo
	@echo ""
	@echo "FlowPilot Analytics is starting on http://$(HOST):$(PORT)/  (start here: every link and login)"
	@echo "  Dashboard:        http://$(HOST):$(PORT)/analytics/flowpilot/escalations/  (northwind-admin or northwind-engineer / flowpilot-demo)"
	@echo "  API (browsable):  http://$(HOST):$(PORT)/api/v1/analytics/flowpilot/escalations?period=90d"
	@echo "  Log in:           http://$(HOST):$(PORT)/api-auth/login/  (e.g. northwind-engineer / flowpilot-demo)"
	@echo "  Django admin:     http://$(HOST):$(PORT)/admin/  (staff / flowpilot-demo)"
	@echo "  Summary widget:   http://$(HOST):$(PORT)/admin/flowpilot_analytics/escalationsummarypage/"
	@echo "  curl:             curl -H 'Authorization: Token <token above>' 'http://$(HOST):$(PORT)/api/v1/analytics/flowpilot/escalations?period=90d'"
	@echo ""
	DATABASE_URL="$(RUN_DATABASE_URL)" $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Each database runs the suite twice: with the app's own models, then the core suite (tests
# marked core) with a host's own models (tests/settings_host_models.py): models are decided
# when Django starts, so each set needs a process of its own.
HOST_MODELS_SETTINGS := tests.settings_host_models

test: $(VENV)/.installed
	@echo "== Test suite on SQLite (the app's models)"
	env -u DATABASE_URL $(BIN)/python -m pytest $(PYTEST_ARGS)
	@echo "== Core suite on SQLite (a host's own models: $(HOST_MODELS_SETTINGS))"
	env -u DATABASE_URL $(BIN)/python -m pytest --ds=$(HOST_MODELS_SETTINGS) $(PYTEST_ARGS)
	@if [ -n "$$DATABASE_URL" ]; then \
		echo "== Test suite on $$(echo "$$DATABASE_URL" | sed -E 's#://[^@/]*@#://***@#') (the app's models)"; \
		$(BIN)/python -m pytest $(PYTEST_ARGS) && \
		echo "== Core suite on the same server (a host's own models, test database *_host_models)" && \
		$(BIN)/python -m pytest --ds=$(HOST_MODELS_SETTINGS) $(PYTEST_ARGS); \
	else \
		echo "== DATABASE_URL is not set: PostgreSQL run skipped (see README, 'Tests on PostgreSQL')"; \
	fi

check: $(VENV)/.installed
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

# Not part of `make test`: it needs PostgreSQL and takes about a minute. LOAD_DURATION,
# LOAD_REQUESTS, LOAD_CONCURRENCY, LOAD_PORT (8051), LOAD_WORKERS, LOAD_THREADS tune it.
loadtest: $(VENV)/.installed
	LOAD_OWNER_URL="$(LOAD_OWNER_URL)" $(BIN)/python scripts/load_test.py

# The throttle on a 2-worker gunicorn, with Redis (LOAD_REDIS_URL, else REDIS_URL, else DB 0 on
# 127.0.0.1:6379) and without: about two and a half minutes; fails if Redis misses the rate by 5 %.
loadtest-throttle: $(VENV)/.installed
	LOAD_OWNER_URL="$(LOAD_OWNER_URL)" $(BIN)/python scripts/throttle_load_test.py

bench: $(VENV)/.installed
	BENCH_DATABASE_URL="$(BENCH_DATABASE_URL)" $(BIN)/python -m bench.escalations $(BENCH_ARGS)
	BENCH_DATABASE_URL="$(BENCH_DATABASE_URL)" $(BIN)/python -m bench.first_action $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 .pytest_cache .hypothesis build dist *.egg-info

# The wheel a host installs, in dist/ (checked as CI checks it).
wheel: $(VENV)/.installed
	rm -rf build dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	rm -rf build *.egg-info
	$(BIN)/python scripts/check_wheel.py dist/flowpilot_analytics-*.whl

# Not part of `make test` (it builds a virtualenv: about half a minute); CI runs it on both databases.
host-smoke: $(VENV)/.installed
	$(BIN)/python scripts/host_smoke.py --host-dir "$(HOST_DIR)" --settings "$(HOST_SETTINGS)" \
		--rls-settings "$(HOST_RLS_SETTINGS)" \
		$(if $(HOST_SMOKE_DATABASE_URL),--postgres-url "$(HOST_SMOKE_DATABASE_URL)")

# Its own organisations, seats, tickets, steps, escalations, user model and RLS; the cross-account
# pages read through its own reporting role. Each database: its answers equal examples/host's.
host-smoke-models: $(VENV)/.installed
	$(BIN)/python scripts/host_smoke.py --host-dir examples/host_models --settings monolith.settings \
		--rls-settings monolith.settings_rls --extra-app auth contenttypes sessions admin tenants support \
		--cross-account-role monolith_reporting --compare-with examples/host:host.settings \
		$(if $(MODELS_HOST_SMOKE_DATABASE_URL),--postgres-url "$(MODELS_HOST_SMOKE_DATABASE_URL)")

# The read router against a real hot standby: a primary cluster and its pg_basebackup -R standby in a
# temporary directory (ports STANDBY_PRIMARY_PORT, STANDBY_PORT: 5433, 5434), removed after. CI runs it.
.PHONY: standby-test
standby-test: $(VENV)/.installed
	$(BIN)/python scripts/standby_test.py

# The README's screenshots (demo data, headless Chromium): docs/admin-widget.png, docs/dashboard-800.png,
# docs/dashboard-1366.png, docs/admin-widget-800.png, docs/admin-handoffs-1366.png.
.PHONY: screenshot
screenshot: $(VENV)/.installed
	env -u DATABASE_URL FLOWPILOT_SCREENSHOT_DIR=docs $(BIN)/python -m pytest tests/test_browser.py -p no:cacheprovider -q

# --- Issue 13 (API hardening): the export measurement and the served hostile check ---------
# `make export-load`: the drill-down's CSV export at 10k, 100k and 250k rows, each served by a
# fresh gunicorn as the app role: the worker's peak RSS and the time, into docs/load-test.md
# (its "export-load" section). Not part of `make test`; needs PostgreSQL; a few minutes the
# first time (the data are built in EXPORT_LOAD_OWNER_URL and reused).
# EXPORT_LOAD_BASELINE=main also measures the same exports served from that git ref.
EXPORT_LOAD_OWNER_URL ?= postgres://postgres@127.0.0.1:5432/flowpilot_export
EXPORT_LOAD_PORT ?= 8052
EXPORT_LOAD_BASELINE ?=

.PHONY: export-load
export-load: $(VENV)/.installed
	EXPORT_LOAD_OWNER_URL="$(EXPORT_LOAD_OWNER_URL)" EXPORT_LOAD_PORT="$(EXPORT_LOAD_PORT)" \
		EXPORT_LOAD_BASELINE="$(EXPORT_LOAD_BASELINE)" $(BIN)/python scripts/export_load.py

# `make served-check`: the demo served by gunicorn as the app role (DEBUG off), then Schemathesis
# as an outside client with `Accept: text/html` for every caller, and requests to every endpoint
# while the app role's database backends are terminated: fails on any 5xx but a JSON 503 with
# Retry-After. Figures into docs/load-test.md ("served-check"). CI runs it; about a minute.
# SERVED_CHECK_BASELINE=main also runs the storm against that git ref, for comparison.
SERVED_CHECK_OWNER_URL ?= postgres://postgres@127.0.0.1:5432/flowpilot_served
SERVED_CHECK_PORT ?= 8053
SERVED_CHECK_BASELINE ?=
SERVED_CHECK_REPORT ?= docs/load-test.md

.PHONY: served-check
served-check: $(VENV)/.installed
	SERVED_CHECK_OWNER_URL="$(SERVED_CHECK_OWNER_URL)" SERVED_CHECK_PORT="$(SERVED_CHECK_PORT)" \
		SERVED_CHECK_BASELINE="$(SERVED_CHECK_BASELINE)" SERVED_CHECK_REPORT="$(SERVED_CHECK_REPORT)" \
		$(BIN)/python scripts/served_check.py
