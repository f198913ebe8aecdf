# make run  — install the runtime (and uvicorn's uvloop/httptools) into .venv and serve on the
#             embedded default (SQLite, in-process broker, local results directory) at
#             http://$(HOST):$(PORT) (default 127.0.0.1:8000), in dev mode (prints a server key)
# make test — install the runtime with the test tools (.[test]) and the Python client
#             (clients/python) and run the whole suite
# make check — ruff format --check, ruff check and mypy --strict (versions pinned in the test extra)
#              over the whole tree
VENV ?= .venv
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed
CLIENT_STAMP := $(VENV)/.installed-client
CLIENT_SOURCES := clients/python/pyproject.toml $(wildcard clients/python/creditstream_client/*.py)

.PHONY: install install-run run test check migrate clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

# runtime only: what the image installs (no test or benchmark dependencies)
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e ".[serve]"
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

# the Python client is its own package (tests/e2e/test_python_client.py imports it as users do);
# reinstalled whenever its sources change
$(CLIENT_STAMP): $(CLIENT_SOURCES) | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet ./clients/python
	rm -rf clients/python/build clients/python/*.egg-info
	touch $(CLIENT_STAMP)

install-run: $(RUN_STAMP)

install: $(TEST_STAMP) $(CLIENT_STAMP)

migrate: install-run
	$(VENV)/bin/creditstream migrate

run: install-run migrate
	CREDITSTREAM_DEV=$${CREDITSTREAM_DEV-1} $(VENV)/bin/creditstream serve --host $(HOST) --port $(PORT)

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict .

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
