# The commands users rely on: `make bench`, `make test` and `make ui` (VARIANT=before|after).
# Each one builds .venv when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

VARIANT ?= before

.PHONY: bench test ui lint format clean-venv

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
