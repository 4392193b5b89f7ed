# Two entry points: `make demo` (end-to-end on synthetic cells) and `make test` (`make test-fast` skips slow tests).
# Each creates .venv and installs what it needs on first use; nothing else has to be set up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hemoembed-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint venv clean-demo browser

$(STAMP): setup.cfg setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# Every test, on TEST_WORKERS pytest-xdist processes (0: serially, in one process). Three on 2 cores keep them
# busier than two (much of a test is single-threaded TensorFlow import and tracing): the whole suite took 28 min
# 40 s with three, 31 min 42 s with two, idle, 2026-12-01 (benchmarks/RESULTS.md, "Test suite time").
# Work stealing: xdist's default hands each worker a fixed run of ~80 neighbouring tests, so one worker can be
# left with minutes of training tests while the others idle (replaying 954 measured test times: mean 1,659 s,
# 90th percentile 1,796 s; stealing: 1,554 s and 1,617 s; RESULTS, "Test suite time").
TEST_WORKERS ?= 3
DIST := --dist worksteal
test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(DIST) $(PYTEST_ARGS)

# The review app's browser test needs Debian's chromium + chromium-driver: installed here when missing and
# running as root with apt-get; otherwise that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: chromium/chromium-driver missing and not root: the review app's browser test will be skipped"; fi

# Everything but the tests marked slow (each over ~20 s on the 2-core machine): the quick check while working,
# on FAST_WORKERS pytest-xdist processes (0: serially, in one process).
FAST_WORKERS ?= 2
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n $(FAST_WORKERS) $(DIST) $(PYTEST_ARGS)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh demo-run

lint: $(STAMP)
	$(BIN)/python -m ruff check hemoembed tests scripts benchmarks

clean-demo:
	rm -rf demo-run
