# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llm-ledger demo

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check llm_ledger tests migrations benchmarks
	$(BIN)/ruff format --check llm_ledger tests migrations benchmarks

typecheck: $(STAMP)  ## mypy: the package, strict on the pure modules (pyproject.toml)
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/alembic upgrade head
	$(BIN)/alembic check

bench: $(STAMP)  ## the full benchmark (sizes 10k and 1M; ~15 min, ~15 GB of temporary disk)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache
