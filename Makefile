# The one command source. `make run` starts the platform; `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: run test test-faults lint format typecheck clean venv browser loadgen audit lock

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e clients/python
	touch $(STAMP) $(RUNTIME)

# What `make run` needs: the platform and its runtime dependencies, not the test tools.
$(RUNTIME): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

## run: the whole platform in the foreground (gateway :8000, worker, beat, Flower :5555)
run: $(RUNTIME)
	@$(BIN)/python -m workers.dev.devstack

## test: lint, then the whole suite against real Redis, workers and gateway, in 4 xdist
## processes (mostly waiting on subprocesses; see tests/conftest.py). PYTEST_ARGS=-n0: serial
test: $(STAMP) lint browser loadgen
	$(BIN)/python -m pytest -n 4 --no-loadscope-reorder --ignore=tests/faults $(PYTEST_ARGS)

## test-faults: kills, outages, poison, memory pressure, 1,000 websockets; prints a table each
test-faults: $(STAMP)
	$(BIN)/python -m pytest -s -p no:cacheprovider tests/faults tests/deploy/test_beat.py $(PYTEST_ARGS)

## browser: Debian's Chromium for the UI test, installed when missing and running as root
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

## loadgen: wrk, the C load generator of the HTTP benches (bench/loadgen.py), installed
## when missing and running as root
loadgen:
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing wrk for the HTTP benches"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	fi

## lock: pin the installed dependency set (what `make venv` resolved) in requirements.lock
lock: $(STAMP)
	@echo "# The exact dependency set of .venv (make venv), for \`make audit\`. Regenerate: make lock" > requirements.lock
	$(BIN)/python -m pip freeze --exclude-editable >> requirements.lock

## audit: known vulnerabilities in requirements.lock (PyPI's advisory data; needs network).
## --strict: a package the service cannot look up fails the audit instead of passing unseen.
audit: $(STAMP)
	$(BIN)/pip-audit --strict --no-deps --progress-spinner off -r requirements.lock

lint: $(STAMP)
	$(BIN)/ruff check service workers tests bench clients
	$(BIN)/ruff format --check service workers tests bench clients

format: $(STAMP)
	$(BIN)/ruff format service workers tests bench clients
	$(BIN)/ruff check --fix service workers tests bench clients

## typecheck: mypy over service, workers and the client (its config: setup.cfg's [mypy] sections).
## Not a step of `make test`: on a fresh clone (CI) mypy has no cache and takes ~20 s, a
## second run under 1 s; .ci/run runs it on its own, before the suites, so it fails fast.
typecheck: $(STAMP)
	$(BIN)/mypy service workers clients/python/claw_client

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache *.egg-info
