# Two commands on a fresh machine: `make quickstart` (the main job on the bundled sample, no
# network, no GPU) and `make test`. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.r1v-installed
STORE ?= runs/quickstart
export HF_HUB_OFFLINE := 1

.PHONY: install quickstart test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/r1v-data ingest builtin:sample --store $(STORE)
	$(BIN)/r1v-data stats --store $(STORE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
