# The two commands of the quick start are `make dev` and `make test`; each builds .venv/ when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-slow test-faults lint bench migrate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
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

clean:
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache
