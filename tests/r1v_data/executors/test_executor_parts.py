"""The executor layer's pieces that need no cluster: block parts (a block run again replaces its
own part), GPUs per actor, the CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ingest_json, run_cli

from r1v_data.cli.app import executor_sets
from r1v_data.config import ExecutorConfig
from r1v_data.executors import Work
from r1v_data.executors.ray_data import gpus_per_actor
from r1v_data.store import Store, registry, utcnow
from r1v_data.store.block_parts import block_part_name, write_block_part


def _row(rid: str, run_id: str) -> dict:
    return {"request_id": rid, "sample_id": "s", "teacher": "t", "round": 1, "sample_index": 0, "run_id": run_id,
            "provenance": "generated", "prompt_version": "p", "verdict": "correct", "created_at": utcnow()}  # fmt: skip


def test_a_block_run_again_replaces_its_own_part(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with Store.open(store, write=True) as s:
        run_id = s.begin_run("generate")
        write_block_part(store, "traces", [_row("a", run_id), _row("b", run_id)], run_id, 7)
        path = write_block_part(store, "traces", [_row("a", run_id), _row("b", run_id)], run_id, 7)
        s.finish_run(run_id, "ok", {}, {})
    assert path is not None and path.name == block_part_name(run_id, 7)
    assert registry.read_part_info(path, "traces").run_id == run_id  # a part readers accept
    ids = [r[0] for r in Store.open(store).query("SELECT request_id FROM traces")[1]]
    assert sorted(ids) == ["a", "b"]  # once each, though the block was written twice


def test_an_actor_reserves_a_vllm_engines_gpus() -> None:
    vllm = Work("vllm:M", {"tensor_parallel_size": 4, "pipeline_parallel_size": 2}, print, "traces")
    assert gpus_per_actor(ExecutorConfig(), vllm, cluster_gpus=16) == 8
    assert gpus_per_actor(ExecutorConfig(), vllm, cluster_gpus=0) == 0  # vLLM's CPU build
    assert gpus_per_actor(ExecutorConfig(), Work("openai:http://h/v1#m", {}, print, "traces"), 16) == 0
    assert gpus_per_actor(ExecutorConfig(num_gpus=1), vllm, 16) == 1  # as configured


def test_a_ray_address_alone_means_the_ray_executor() -> None:
    assert executor_sets(None, None) == []
    assert executor_sets("local", None) == ["executor.kind=local"]
    assert executor_sets(None, "auto") == ["executor.kind=ray", "executor.address=auto"]


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--teacher", "openai-batch:http://127.0.0.1:9/v1#m"],
        ["generate", "--teacher", "openai:http://127.0.0.1:9/v1#m", "--reviser", "anthropic-batch:claude"],
        ["score", "--judge", "anthropic-batch:claude"],
        ["filter", "--reward", "judge:openai-batch:http://127.0.0.1:9/v1#m"],
    ],
)
def test_a_batch_api_on_ray_is_refused_before_any_work(tmp_path: Path, args: list[str]) -> None:
    """A batch backend records its batches in the store, which only the driver writes."""
    pytest.importorskip("ray")
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    proc = run_cli(*args, "--store", store, "--executor", "ray", check=False)
    assert proc.returncode == 1 and "a batch API runs from this process; use --executor local" in proc.stderr
    assert Store.open(store).query("SELECT count(*) FROM runs WHERE command != 'ingest'")[1] == [(0,)]
