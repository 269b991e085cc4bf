"""The executor layer's pieces that need no cluster: block parts (a block run again replaces its
own part), GPUs per actor, the CLI flags."""

from __future__ import annotations

from pathlib import Path

from conftest import ingest_json

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
