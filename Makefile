# make run   - install the embedded default (no extras), generate sample backups if the landing zone is empty, load them all
# make test  - install for tests (the dev extra, and Debian's chromium if missing), run the whole test suite (PostgreSQL, S3, Redis, browser)
#              on TEST_WORKERS pytest-xdist workers (3: most of a test's time waits on processes and services)
# make check - install for tests, run the quick tier only: the tests etl_assets_tests/conftest.py marks `quick` (no PostgreSQL,
#              S3, Redis, Dagster process, dbt or browser; about a minute, in one process), for the edit loop
# make dev   - install with the ui extra, open the Dagster UI on http://127.0.0.1:3000
# make bench - install with the bench extra (dlt for the peer rows), run the load, sensor and encoding
#              benchmarks (the encoding figure: reading the 1M-row file as UTF-8 and as ISO-8859-1)
#              (BENCH_ARGS="--rows 100000" for a quick one; BENCH_ARGS="--only loads --csv my_export.csv" for your file)
# make docs  - regenerate the docs' figures from benchmarks/results/ and their pictures (docs/generate.py)
# make lock  - update uv.lock after a change to pyproject.toml's dependencies (commit both)
# make sync EXTRAS="postgres redshift ui" - install .venv with a deployment's extras (docs/configuration.md)
#
# Every target installs .venv from uv.lock, exactly (`uv sync --locked`: what the target's extras do not
# hold is removed) and fails, saying to run `make lock`, when uv.lock no longer matches pyproject.toml.
# uv itself lives in its own small venv, .venv-tools/, so syncing .venv never removes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
# make run and make dev keep the sample's discovered state under data/ (git-ignored), so the state
# committed in etl_assets/salesforce/discovered.yaml (what tests and deployments read) stays as reviewed.
run dev: export ETL_ASSETS_SALESFORCE_DISCOVERED := $(CURDIR)/data/discovered.yaml

# The extras each set installs (pyproject.toml; docs/configuration.md lists what each deployment needs).
EXTRAS_run :=
EXTRAS_dev := --extra ui
EXTRAS_test := --extra dev
EXTRAS_bench := --extra bench

.PHONY: install install-run install-dev install-bench sync lock run test check dev bench docs clean

$(TOOLS)/.uv-$(UV_VERSION):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

# uv.lock must match pyproject.toml (`uv lock --check`), else the target stops with what to run.
CHECK_LOCK = $(UV) lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }
SYNC = UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(VENV) $(UV) sync --locked --quiet --python $(PYTHON) --compile-bytecode

# One stamp per set: syncing a set removes the others' stamps (it uninstalls what only they hold).
$(VENV)/.synced-%: pyproject.toml uv.lock | $(TOOLS)/.uv-$(UV_VERSION)
	@$(CHECK_LOCK)
	rm -f $(VENV)/.synced-*
	$(SYNC) $(EXTRAS_$*)
	touch $@

install: $(VENV)/.synced-test        # the developer's environment: every deployment's packages and the test tools
install-run: $(VENV)/.synced-run     # the embedded default only
install-dev: $(VENV)/.synced-dev
install-bench: $(VENV)/.synced-bench

# A deployment's set, named by its extras (none: the embedded default); no stamp, so it always syncs.
sync: | $(TOOLS)/.uv-$(UV_VERSION)
	@$(CHECK_LOCK)
	rm -f $(VENV)/.synced-*
	$(SYNC) $(foreach extra,$(EXTRAS),--extra $(extra))

lock: | $(TOOLS)/.uv-$(UV_VERSION)
	$(UV) lock

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

run: install-run $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/etl-assets generate-sample --if-empty
	$(BIN)/etl-assets catalog refresh
	$(BIN)/etl-assets materialize
	$(BIN)/etl-assets files --sample
	$(BIN)/etl-assets totesys

# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser test (apt-get, needs root)..."
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

# --dist loadgroup: tests sharing an expensive module-scoped fixture run on one worker (conftest.py groups them).
TEST_WORKERS ?= 3
test: install $(CHROMIUM)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

check: install
	$(BIN)/python -m pytest -m quick $(PYTEST_ARGS)

# The bench extra (dlt and the ADBC driver for the peer rows, matplotlib for the chart, and the dev
# extra) is installed by this target only, so `make test` and `make install` never fetch it.
bench: install-bench
	$(BIN)/etl-assets bench $(BENCH_ARGS)

# The docs' generated blocks (figures from benchmarks/results/) and pictures (charts, the UI's asset graph
# photographed in Chromium): docs/generate.py. Needs the bench extra (matplotlib) and /usr/bin/chromium.
docs: install-bench $(CHROMIUM)
	$(BIN)/python docs/generate.py --pictures

dev: install-dev $(DAGSTER_HOME)/dagster.yaml
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev

clean:
	rm -rf data/warehouse.duckdb data/dagster_home
