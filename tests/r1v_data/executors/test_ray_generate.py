"""`--executor ray` for generate on a local Ray cluster with the `openai:` teacher against a local
server: the same request ids and traces as `--executor local`, a re-run that skips everything,
and a Ray actor killed in the middle of a run losing and duplicating nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import ingest_json, run_cli
from servers.fake_openai import FakeOpenAIProcess

from r1v_data.config import GenerateConfig
from r1v_data.stages.generate import run_generate
from r1v_data.store import Store

TRACE_FIELDS = "request_id, sample_id, teacher, round, sample_index, prompt, text, think, answer, verdict, " \
    "finish_reason, prompt_tokens, completion_tokens, sampling"  # fmt: skip


@pytest.fixture
def two_stores(tmp_path: Path) -> tuple[Path, Path]:
    ingest_json("builtin:sample", "--store", tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    return tmp_path / "local", tmp_path / "ray"


def traces(store: Path) -> dict[str, tuple]:
    con = Store.open(store).connect()
    try:
        rows = con.sql(f"SELECT {TRACE_FIELDS} FROM traces").fetchall()
    finally:
        con.close()
    by_id = {r[0]: r for r in rows}
    assert len(by_id) == len(rows), "a request id has two traces"
    return by_id


def test_ray_and_local_make_the_same_traces_and_a_rerun_skips_them(
    ray_cluster: str, two_stores: tuple[Path, Path]
) -> None:
    local, on_ray = two_stores
    with FakeOpenAIProcess(latency_s=0.005) as srv:
        teacher = f"openai:{srv.url}#m"
        mine = run_generate(GenerateConfig(store=local, teacher=teacher, n=2)).as_dict()
        ray_args = ("--executor", "ray", "--ray-address", ray_cluster, "--set", "executor.block_size=16")
        cli = run_cli("generate", "--store", on_ray, "--teacher", teacher, "--n", "2", *ray_args, "--json")
        theirs = json.loads(cli.stdout)
        again = run_generate(GenerateConfig(store=on_ray, teacher=teacher, n=2, executor={"kind": "ray"}))
    assert traces(on_ray) == traces(local) and len(traces(local)) == 76
    for key in ("requests", "sent", "verdicts", "completion_tokens", "prompt_tokens", "failed"):
        assert theirs[key] == mine[key], key
    assert (again.sent, again.skipped) == (0, 76)
    parts = sorted(p.name for p in (on_ray / "traces").iterdir())
    assert sum("-b" in p for p in parts) == 5  # 76 requests in blocks of 16, one part each


def _map_workers() -> list[int]:
    """PIDs of the Ray Data actors running r1v's BlockWorker (Ray names the process after it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"BlockWorker" in cmd:
            found.append(int(pid))
    return found


def test_a_killed_actor_loses_and_duplicates_nothing(ray_cluster: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess(latency_s=0.15) as srv:
        cfg = GenerateConfig(store=store, teacher=f"openai:{srv.url}#m",
                             teacher_options={"concurrency": 2}, executor={"kind": "ray", "block_size": 2})  # fmt: skip
        outcome: dict = {}
        run = threading.Thread(target=lambda: outcome.update(result=run_generate(cfg)))
        run.start()
        killed = _kill_one_worker_once_a_block_is_written(store, run)
        run.join(timeout=300)
        assert not run.is_alive()
        again = run_generate(cfg)
    assert killed, "no Ray actor was found to kill"
    first = outcome["result"]  # Ray restarted the actor and ran its block again: the run completed
    assert first.sent == 38 and not first.failed, first.as_dict()
    by_id = traces(store)  # asserts one trace per request id
    assert len(by_id) == 38 and all(t[7] is not None for t in by_id.values())
    assert again.sent == 0 and again.skipped == 38


def _kill_one_worker_once_a_block_is_written(store: Path, run: threading.Thread) -> bool:
    deadline = time.monotonic() + 120
    while run.is_alive() and time.monotonic() < deadline:
        written = [p for p in (store / "traces").iterdir() if "-b" in p.name]
        workers = _map_workers()
        if written and workers:
            os.kill(workers[0], signal.SIGKILL)  # mid-run: its block in flight is lost with it
            return True
        time.sleep(0.05)
    return False


def test_executor_ray_without_ray_says_so_in_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    env_path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path
    try:
        proc = run_cli("generate", "--store", store, "--executor", "ray", check=False)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'r1v[ray]'" in lines[0], proc.stderr
