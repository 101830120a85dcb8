# The two commands of the quick start are `make dev` and `make test`; each builds .venv/ when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-slow test-faults lint bench migrate pins clean

# .venv/ holds the project (editable) with both extras: `dev` (the dev stack's servers, the
# emulators' needs) and `test` (the suite and the linters). On Linux with Python 3.11, what CI
# runs, it installs the exact, hashed pins of requirements/ci.txt, then the project without
# resolving anything. Elsewhere (macOS, another Python) those pins may name no wheel for the
# platform, so pip resolves pyproject.toml's ranges instead.
$(STAMP): pyproject.toml requirements/ci.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c 'import sys; sys.exit(not (sys.platform == "linux" and sys.version_info[:2] == (3, 11)))'; then \
	    set -x; \
	    $(BIN)/python -m pip install --quiet --require-hashes --requirement requirements/ci.txt \
	    && $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .; \
	else \
	    echo "not Linux with Python 3.11: installing pyproject.toml's ranges, not the pins" >&2; \
	    set -x; \
	    $(BIN)/python -m pip install --quiet --upgrade pip \
	    && $(BIN)/python -m pip install --quiet --editable '.[dev,test]'; \
	fi
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/fulfillment dev $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

# The fault-tolerance suite: batches of orders under injected faults, with a report table.
test-faults: $(STAMP)
	$(BIN)/python -m pytest -m faults -s $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

migrate: $(STAMP)
	$(BIN)/fulfillment migrate

# Rewrites requirements/ from pyproject.toml, with every file's hash and no index named: ci.txt
# (the project, both extras and the build backend: CI and .venv/), and at ci.txt's versions
# runtime.txt (the project alone: the image's production target) and dev.txt (with the `dev`
# extra: the image's emulators target). Pins still in range are kept; `make pins ARGS=--upgrade` takes the
# newest releases. Run it on Linux with Python 3.11: pins are resolved for the running platform.
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make pins" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-options --no-emit-index-url --no-emit-trusted-host \
	--no-emit-find-links

pins: $(STAMP)
	$(PIP_COMPILE) $(ARGS) --all-build-deps --extra dev --extra test \
	    --output-file requirements/ci.txt pyproject.toml
	$(PIP_COMPILE) --build-deps-for wheel --constraint requirements/ci.txt \
	    --output-file requirements/runtime.txt pyproject.toml
	$(PIP_COMPILE) --build-deps-for wheel --constraint requirements/ci.txt --extra dev \
	    --output-file requirements/dev.txt pyproject.toml

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
