# The one command source. `make run` starts the platform; `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format typecheck clean venv

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the whole platform in the foreground (gateway :8000, worker, beat, Flower :5555)
run: $(STAMP)
	$(BIN)/python -m workers.devstack

## test: lint, then the whole suite against real Redis, workers and gateway
test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service workers tests
	$(BIN)/ruff format --check service workers tests

format: $(STAMP)
	$(BIN)/ruff format service workers tests
	$(BIN)/ruff check --fix service workers tests

typecheck: $(STAMP)
	$(BIN)/mypy service workers

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache *.egg-info
