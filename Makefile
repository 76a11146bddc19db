# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The bench's quixstreams peer; its dependencies are pinned in pyproject.toml's dev extras, not its own (it asks for
# pydantic<2.14 and pydantic-settings<2.16, older than the project's pins): installed without them.
QUIXSTREAMS := quixstreams==3.28.1

.PHONY: install run check test test-deps lint-imports bench bench-smoke soak clean schema screenshot

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(QUIXSTREAMS)
	touch $(STAMP)

# Flags for `is-telemetry up`: make run ARGS="--collector-port 8490 --no-simulate"
ARGS ?=

run: install
	$(BIN)/is-telemetry up $(ARGS)

# Debian packages the tests use: PostgreSQL 15 server (IS database), Chromium (dashboard), docker-compose (validates compose/).
test-deps:
	@missing=""; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql-15"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium chromium-driver"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The integration tier (tests marked `integration`: they start processes, servers, sockets or chDB; the unit tier ran in
# `make check`), two test files at a time (pytest-xdist, whole files per process: a file's shared stack stays in one
# process). Then every bench and bench tool at a tiny size (python -m bench --smoke, ~3 min): a bench that no longer
# runs fails.
TEST_JOBS ?= 2
test: install test-deps
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m integration tests
	$(BIN)/python -m bench --smoke

bench-smoke: install
	$(BIN)/python -m bench --smoke

# The layer contract (pyproject.toml [tool.importlinter]): ground <- stages <- composition, stages independent.
lint-imports: install
	$(BIN)/lint-imports

# Lint, format, types, the layer contract and the unit tier (every test not marked `integration`, wherever it is:
# pure, it may not start a process, open a socket or chDB, tests/conftest.py): seconds, before the integration tier.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not integration" tests

bench: install
	$(BIN)/python -m bench

soak: install
	$(BIN)/python -m bench.soak_collector --seconds 300

schema: install
	$(BIN)/is-telemetry schema > docs/telemetry-message.schema.json

# docs/screenshot.webp (about 80 KB), only when asked: the top of the dashboard of a running `make run` whose history is
# stored (docs/dashboard.md). No test writes it.
SCREENSHOT_URL ?= http://127.0.0.1:8481/
screenshot: install
	$(BIN)/python -m tests.browser $(SCREENSHOT_URL) docs/screenshot.webp

clean:
	rm -rf $(VENV) data
