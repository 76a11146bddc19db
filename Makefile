# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean schema

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/is-telemetry up

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python -m bench

schema: install
	$(BIN)/is-telemetry schema > docs/telemetry-message.schema.json

clean:
	rm -rf $(VENV) data
