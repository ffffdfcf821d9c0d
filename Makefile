# The commands users rely on: `make bench`, `make test` and `make ui` (VARIANT=before|after).
# Each one builds .venv when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

VARIANT ?= before
# The suite runs on pytest-xdist workers, a test file per worker at a time (module fixtures
# start once); end-to-end runs wait on fixed phases, so three workers fit two cores.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The fast tests are many and short: two workers taking them one by one beat three taking
# files (24 s against 29 s here), as no module fixture is costly there.
FAST_WORKERS ?= 2
# The suite is CPU-bound and writes ~200 MB of throwaway clusters and results: on tmpfs a
# write costs a tenth of the CPU it costs on disk here. /dev/shm is used when it has 1 GiB
# free (a container's default 64 MB has not); TEST_TMPDIR= keeps your TMPDIR.
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 1048576 {print "/dev/shm"}')
PYTEST = $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(BIN)/python -m pytest

.PHONY: bench test test-fast ui lint format clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

bench: $(STAMP)
	$(BIN)/poolbench run $(BENCH_ARGS)

ui: $(STAMP)
	$(BIN)/poolbench ui --variant $(VARIANT) $(UI_ARGS)

test: $(STAMP)
	$(PYTEST) $(XDIST) $(PYTEST_ARGS)

# Everything but the end-to-end runs and the tests that sample or wait for seconds.
test-fast: $(STAMP)
	$(PYTEST) -n $(FAST_WORKERS) --dist load -m "not e2e and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
