# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
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
	$(BIN)/interlink run

# A real Prefect server (UI at http://127.0.0.1:4200; SQLite under .interlink/, or PostgreSQL when
# PREFECT_API_DATABASE_CONNECTION_URL is set) and every declared deployment served on its schedule.
serve: export PREFECT_HOME ?= $(CURDIR)/.interlink/prefect
serve: export PREFECT_API_URL = http://127.0.0.1:4200/api
serve: $(INSTALLED)
	mkdir -p $(PREFECT_HOME)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 > .interlink/prefect-server.log 2>&1 & \
	  server=$$!; trap 'kill $$server' EXIT INT TERM; $(BIN)/interlink serve

# Headless Chromium renders the quality report's charts in the tests; installed if missing (Debian, as root).
tools:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(INSTALLED) tools
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .interlink

# What the data-quality gate costs as a share of a full CRM → billing sync (writes benchmarks/results/gate.json).
# Uses the existing .venv as is (run `make install` first on a fresh machine).
N ?= 1000000
.PHONY: bench-gate
bench-gate:
	$(BIN)/python benchmarks/gate_share.py --n $(N)
