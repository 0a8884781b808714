# One command to run the dev server, one to run every test (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run setup test unit test-deps lint format clean

# The install builds the native forwarding plane (native/): rebuilt when its sources change.
$(STAMP): pyproject.toml setup.py $(wildcard native/*.c native/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## run: set up (first time) and start the dev server on http://127.0.0.1:7880
run: setup
	$(BIN)/roomcast serve --dev

## test-deps: Debian and npm packages the tests drive (Node SDKs)
test-deps:
	bash scripts/install-test-deps.sh

## test: set up everything, lint, type-check and run the whole suite
test: test-deps setup lint  # Debian's headers first: the install builds the native plane
	$(BIN)/python -m pytest -q

## unit: the unit tests only (seconds; no Debian or npm packages needed)
unit: setup
	$(BIN)/python -m pytest -q tests/unit

## lint: ruff, mypy, the import contracts (layers, no cycles) and file/class size limits
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_sizes.py src

format: setup
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) tests/node/node_modules
