# One entry point for set-up and checks; .ci/run calls these targets too.
#
# Installs come from the locks, so a fresh machine gets exactly what CI tested:
#   requirements.lock      the runtime dependencies (what a deployment installs)
#   requirements-dev.lock  runtime + test + dev tools (what `make install` installs)
# pyproject.toml keeps the ranges; `make lock` re-resolves them, `make test-latest` tries the
# newest versions the ranges allow without touching the locks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
LATEST_VENV ?= .venv-latest
UV_COMPILE = --python-version 3.11 --generate-hashes --no-header --quiet -c constraints.in

.PHONY: install demo test lint typecheck check check-lock lock test-latest clean

$(BIN)/reaper: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(BIN)/reaper

demo: install
	$(BIN)/reaper demo

# pytest exits 5 when it collected no test; make treats any non-zero exit as failure.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check reaper tests benchmarks scripts
	$(BIN)/ruff format --check reaper tests benchmarks scripts

typecheck: install
	$(BIN)/mypy

# The venv holds exactly the locked versions (reaper itself, pip and setuptools aside).
check-lock: install
	$(BIN)/python scripts/check_lock.py requirements-dev.lock

check: check-lock lint typecheck test

lock: install
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --extra notify --extra coordination $(UV_COMPILE) -o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml $(UV_COMPILE) -c requirements-dev.lock -o requirements.lock

test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/pip install --quiet --upgrade -e '.[test,dev,notify,coordination]'
	$(LATEST_VENV)/bin/pip freeze --exclude-editable > $(LATEST_VENV)/freeze.txt
	$(LATEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
