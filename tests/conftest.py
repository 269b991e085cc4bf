"""Shared fixtures: the real sample data in ../shared/data and the real `r1v-data` entry point."""

from __future__ import annotations

import atexit
import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("R1V_SHARED", REPO.parent / "shared")) / "data"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One 2-CPU local Ray cluster for the whole session (each start costs seconds); yields its
    address, for `r1v-data --ray-address` in a child process."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster: no token files
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared sample data is not at {SHARED_DATA} (set R1V_SHARED)")
    return SHARED_DATA


def run_cli(*args: Any, tool: str = "r1v-data", check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a console script exactly as a user would, with no terminal attached."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [str(BIN / tool), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{tool} {args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def ingest_json(*args: Any) -> dict[str, Any]:
    return json.loads(run_cli("ingest", *args, "--json").stdout)


def ingest_geoqa(store: Path, shared: Path, teachers: tuple[str, ...]) -> Path:
    """The GeoQA problems as text (their images are not in ../shared) with these models' traces."""
    logs = shared / "traces" / "r1v_eval_logs"
    ingest_json(logs / "geoqa_test_prompts.jsonl", "--store", store, "--preset", "native",
                "--map", "question=question", "--map", "answer=ground_truth", "--map", "images=no_images")  # fmt: skip
    for name in teachers:
        run_cli("import-traces", logs / f"{name}.json", "--store", store, "--teacher", name)
    return store


def stats_json(store: Path) -> dict[str, Any]:
    return json.loads(run_cli("stats", "--store", store, "--json").stdout)


def store_rows(store: Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """The rows of `sql` over the store's tables, as dicts."""
    from r1v_data.store import Store

    con = Store.open(store).connect()
    try:
        return con.sql(sql, params=params).to_arrow_table().to_pylist()
    finally:
        con.close()


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    """A copy of `builtin:sample` ingested once per test session, at tmp_path/store."""
    return Path(shutil.copytree(_sample_ingested(), tmp_path / "store"))


@functools.cache
def _sample_ingested() -> Path:
    root = Path(tempfile.mkdtemp(prefix="r1v-sample-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    ingest_json("builtin:sample", "--store", root / "store")
    return root / "store"


def mathv_with_outputs(store: Path, shared: Path, *filter_args: str) -> Path:
    """MATH-Vision testmini (real images) with the three models' real outputs imported as
    traces; filtered when `filter_args` are given (e.g. "--min-score", "3"). The imported store is
    built once per test session and copied: a dozen tests start from it."""
    shutil.copytree(_mathv_imported(shared), store)
    if filter_args:
        run_cli("filter", "--store", store, *filter_args)
    return store


@functools.cache
def _mathv_imported(shared: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="r1v-mathv-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    store, mv = root / "store", shared / "mathv_testmini"
    ingest_json(mv / "testmini.jsonl", "--store", store)
    run_cli(
        "import-traces",
        *sorted(mv.glob("outputs_*_testmini.jsonl")),
        "--store",
        store,
        "--source",
        "testmini",
    )
    return store


def answer_key(store: Path, path: Path) -> Path:
    """A store's problems and reference answers, written to `path` as the solving test teacher
    (`servers.fake_openai.solver`) reads them: each problem told apart by its question and a
    piece of its first image (several problems share a question)."""
    from r1v_data.store import Store

    sql = "SELECT question, answer, images FROM samples WHERE answer IS NOT NULL"
    key = [{"question": q, "answer": a, "image": _middle(images[0]["bytes"]) if images else ""}
           for q, a, images in Store.open(store).query(sql)[1]]  # fmt: skip
    path.write_text(json.dumps(key))
    return path


def _middle(image: bytes) -> str:
    """A piece of an image's base64 that tells it from the others (its ends are format boilerplate)."""
    b64 = base64.b64encode(image).decode()
    return b64[len(b64) // 2 : len(b64) // 2 + 64]
