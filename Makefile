# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check bench bench-smoke clean

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

check: $(STAMP)
	$(BIN)/alembic upgrade head
	$(BIN)/alembic check

clean:
	rm -rf $(VENV) .pytest_cache
