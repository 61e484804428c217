# make run   - install, generate sample backups if the landing zone is empty, load them all
# make test  - install (and Debian's chromium if missing), run the whole test suite (PostgreSQL, S3, Redis, browser)
# make dev   - install, open the Dagster UI on http://127.0.0.1:3000
# make bench - install (with the bench extra: dlt for the peer rows), run the load, sensor and encoding
#              benchmarks (the encoding figure: reading the 1M-row file as UTF-8 and as ISO-8859-1)
#              (BENCH_ARGS="--rows 100000" for a quick one; BENCH_ARGS="--only loads --csv my_export.csv" for your file)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
# make run and make dev keep the sample's discovered state under data/ (git-ignored), so the state
# committed in etl_assets/salesforce/discovered.yaml (what tests and deployments read) stays as reviewed.
run dev: export ETL_ASSETS_SALESFORCE_DISCOVERED := $(CURDIR)/data/discovered.yaml

.PHONY: install run test dev bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

run: install $(DAGSTER_HOME)/dagster.yaml
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

test: install $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The bench extra (dlt and the ADBC driver for the peer rows, matplotlib for the chart) is installed
# by this target only, so `make test` and `make install` never fetch it.
$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev,bench]'
	touch $@

bench: install $(VENV)/.bench-installed
	$(BIN)/etl-assets bench $(BENCH_ARGS)

dev: install $(DAGSTER_HOME)/dagster.yaml
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev

clean:
	rm -rf data/warehouse.duckdb data/dagster_home
