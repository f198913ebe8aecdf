# make run  — install into .venv and serve on the embedded default (SQLite, in-process broker,
#             local results directory) at http://127.0.0.1:8000, in dev mode (prints a server key)
# make test — install and run the whole suite
VENV ?= .venv
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run test migrate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(VENV)/bin/creditstream migrate

run: install migrate
	CREDITSTREAM_DEV=$${CREDITSTREAM_DEV-1} $(VENV)/bin/creditstream serve --host $(HOST) --port $(PORT)

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
