# The two commands a newcomer needs:
#   make demo   run a complete station on embedded defaults (simulated camera, CPU inference,
#               Modbus TCP server on 127.0.0.1:5020, SQLite under ./var, HMI on http://127.0.0.1:8080)
#   make test   run the whole test suite (what .ci/run calls), after the linters
# For the inner loop:
#   make test-fast  the tests that need no system package, browser, PostgreSQL, training or
#                   soak (under 3 minutes on 2 cores); run it after every change
#   make lint       ruff, and the import layers (import-linter) on the package as installed
# Both bootstrap what they need first (a .venv with the package and its extras; the Debian
# packages the tests drive, when run as root on Debian).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
# Models are pulled from local copies first: the read-only shared folder next to the checkout.
export STATION_MODEL_DIRS ?= $(abspath $(wildcard ../shared/models))

.PHONY: demo test test-fast test-long lint venv system-deps bench eval clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

system-deps:
	bash tools/install-system-deps.sh

demo: venv
	$(BIN)/station demo

FAST_MARKERS := not long and not slow and not browser and not postgres and not system and not training

test: venv system-deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not long" $(PYTEST_ARGS)

test-long: venv system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -m long $(PYTEST_ARGS)

test-fast: venv lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check station db hmi models tests tools
	rm -rf $(VENV)/lint-target build  # setuptools keeps modules a move or delete left in build/lib
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --target $(VENV)/lint-target . 2>/dev/null
	cd $(VENV)/lint-target && PYTHONPATH=. ../bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

bench: venv
	$(BIN)/station bench --parts 50

clean:
	rm -rf $(VENV) var build *.egg-info
