# Two entry points: `make demo` (end-to-end on synthetic cells) and `make test`.
# Each creates .venv and installs what it needs on first use; nothing else has to be set up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hemoembed-installed
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean-demo

$(STAMP): setup.cfg setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh demo-run

lint: $(STAMP)
	$(BIN)/python -m ruff check hemoembed tests scripts benchmarks

clean-demo:
	rm -rf demo-run
