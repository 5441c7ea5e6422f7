# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Demo state (metadata, demo systems, reports, the local Prefect) stays under .interlink/.
export PREFECT_HOME ?= $(CURDIR)/.interlink/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test install clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt --editable '.[test]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/interlink run crm_to_billing

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .interlink
