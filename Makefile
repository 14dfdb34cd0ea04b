# mailmoat — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-smtp clean

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then \
	  "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	    { echo "mailmoat needs Python 3.11 or newer (found $(PYTHON))"; exit 1; }; \
	  "$(PYTHON)" -m venv $(VENV) || \
	    { echo "could not create $(VENV): on Debian run 'apt-get install python3-venv'"; exit 1; }; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailmoat serve

# Two workers, each taking whole files (module fixtures start servers once): much of
# the suite waits on fsync and sockets, so this halves its time even on two cores.
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/api.py && $(BIN)/python bench/smtp.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

bench-smtp: $(STAMP)
	$(BIN)/python bench/smtp.py
