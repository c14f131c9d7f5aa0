# Two set-up commands (see README): `make demo` and `make test`. Both install what is missing into .venv/
# first; a second run does not reinstall (the stamp file is newer than pyproject.toml and constraints.txt).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fastxfer-installed

.PHONY: install demo test test-slow browser bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint constraints.txt --editable ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# the main job on the embedded default data
demo: install
	$(BIN)/fastxfer info

# Debian's Chromium for the browser tests (the tests skip, saying why, when it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "note: chromium not installed; browser tests will be skipped"; }

test: install browser
	$(BIN)/python -m pytest
	$(BIN)/nbdev-test

# opt-in: slow tests (training on the real shared data) and notebook cells flagged `#| slow`
test-slow: install browser
	$(BIN)/python -m pytest -m slow
	$(BIN)/nbdev-test --flags slow
