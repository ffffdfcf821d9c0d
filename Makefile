# The commands users rely on: `make bench`, `make test` and `make ui` (VARIANT=before|after).
# Each one builds .venv when it is missing or older than pyproject.toml or the lock files.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

VARIANT ?= before
# The suite runs on pytest-xdist workers, a test file per worker at a time (module fixtures
# start once). End-to-end runs wait on fixed phases, sleeps and timeouts: on three workers the
# two cores were busy 1.25 of 2 on average (3 min 08-11 s here); on four, 2 min 41-43 s for
# 4 % more CPU (measured on a machine whose make test costs 231-246 s of CPU).
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The fast tests are many and short: two workers taking them one by one beat three taking
# files (24 s against 29 s here), as no module fixture is costly there.
FAST_WORKERS ?= 2
# The suite is CPU-bound and writes ~200 MB of throwaway clusters and results: on tmpfs a
# write costs a tenth of the CPU it costs on disk here. /dev/shm is used when it has 1 GiB
# free (a container's default 64 MB has not); TEST_TMPDIR= keeps your TMPDIR.
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 1048576 {print "/dev/shm"}')
# The suite writes bytecode even where PYTHONDONTWRITEBYTECODE is set (as on CI here): its
# hundreds of Python processes then compile the tests and the test apps once, not each time
# (the packages' and poolbench's bytecode is written at install and by `bytecode`).
PYTEST = PYTHONDONTWRITEBYTECODE= $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(BIN)/python -m pytest

# Dependencies come from requirements.lock: every package pinned with its hashes, for Python
# ≥ 3.11 on every platform (uv's universal resolution), the dev extra included. uv installs it
# (a few seconds with a warm cache): the uv on PATH, else uv put into the venv from
# requirements-uv.lock (pinned, hashed) by $(PYTHON)'s own pip. pip is the fallback
# (USE_UV=0 forces it), as it is when uv fails. uv reads no pip.conf: point it at a mirror
# with UV_DEFAULT_INDEX (pip keeps using its configuration). Both write the packages' bytecode
# at install (pip does by default, uv with --compile-bytecode): with PYTHONDONTWRITEBYTECODE set,
# as on CI here, nothing else would, and every process would compile pandas, scipy, matplotlib
# and Locust again (1.9 s of CPU to import the report's modules instead of 0.55 s).
LOCK := requirements.lock
UV_LOCK := requirements-uv.lock
USE_UV ?= 1
UV ?= $(shell command -v uv 2>/dev/null)
QUIET_PIP := install --quiet --disable-pip-version-check
PIP := $(BIN)/python -m pip $(QUIET_PIP)

.PHONY: bytecode bench test test-fast ui lint format clean-venv lock

$(STAMP): pyproject.toml $(LOCK) $(UV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	@uv="$(UV)"; \
	if [ "$(USE_UV)" = 1 ] && [ -z "$$uv" ] && [ ! -x $(BIN)/uv ]; then \
	  $(PYTHON) -m pip --python $(BIN)/python $(QUIET_PIP) --require-hashes -r $(UV_LOCK); \
	fi; \
	uv=$${uv:-$(BIN)/uv}; \
	if [ "$(USE_UV)" = 1 ] && [ -x "$$uv" ] \
	  && "$$uv" pip install --quiet --compile-bytecode --python $(BIN)/python --require-hashes -r $(LOCK) \
	  && "$$uv" pip install --quiet --python $(BIN)/python --no-deps -e .; then :; \
	else \
	  if [ "$(USE_UV)" = 1 ]; then echo "make: uv could not install $(LOCK); pip instead" >&2; fi; \
	  $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null; \
	  $(PIP) --require-hashes -r $(LOCK) && $(PIP) --no-deps -e .; \
	fi
	@touch $(STAMP)

# Refresh the lock files from pyproject.toml (newest versions its ranges allow); commit both.
lock: $(STAMP)
	@uv="$(UV)"; uv=$${uv:-$(BIN)/uv}; \
	test -x "$$uv" || $(PYTHON) -m pip --python $(BIN)/python $(QUIET_PIP) --require-hashes -r $(UV_LOCK); \
	flags="--generate-hashes --universal --python-version 3.11 --quiet"; \
	"$$uv" pip compile pyproject.toml --extra dev $$flags --custom-compile-command "make lock" \
	  -o $(LOCK) && \
	echo uv | "$$uv" pip compile - $$flags --custom-compile-command "make lock" -o $(UV_LOCK)
	@echo "make: $(LOCK) and $(UV_LOCK) refreshed from pyproject.toml; commit both"

# poolbench's own bytecode, written before the commands that start many Python processes
# (an editable install is compiled by nobody; stale files are recompiled as usual).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q poolbench

bench: bytecode
	$(BIN)/poolbench run $(BENCH_ARGS)

ui: bytecode
	$(BIN)/poolbench ui --variant $(VARIANT) $(UI_ARGS)

test: bytecode
	$(PYTEST) $(XDIST) $(PYTEST_ARGS)

# Everything but the end-to-end runs and the tests that sample or wait for seconds.
test-fast: bytecode
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
