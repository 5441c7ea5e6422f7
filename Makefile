# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test install tools clean

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

# Headless Chromium renders the quality report's charts in the tests; installed if missing (Debian, as root).
tools:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(INSTALLED) tools
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .interlink
