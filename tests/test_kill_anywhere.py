"""SIGKILL anywhere: each stage is killed at 20 seeded random moments, re-run after each kill, and
the store it leaves must equal the store of one uninterrupted run: the same request ids, the
same rows, no duplicates. The figures are printed (run with -s to see them)."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import BIN, answer_key, run_cli
from servers.fake_openai import FakeOpenAIProcess

from r1v_data.store import Store

KILLS = 20
VOLATILE = {"run_id", "created_at", "latency_s"}  # differ between any two runs


@dataclass
class Stage:
    name: str
    before: str | None  # the stage whose finished store this one starts from
    args: Callable[[Path, Path, str], list[str]]  # (store, scratch folder, teacher URL) -> arguments
    snapshot: Callable[[Path, Path], Any]  # (store, scratch folder) -> what must match


def _rows(store: Path, sql: str) -> Counter[str]:
    """The rows of `sql` as a multiset (duplicates count), volatile columns left out."""
    con = Store.open(store).connect()
    try:
        table = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    keep = [c for c in table.column_names if c not in VOLATILE]
    return Counter(json.dumps(r, sort_keys=True, default=_plain) for r in table.select(keep).to_pylist())


def _plain(value: Any) -> Any:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


def _latest_decisions(store: Path, _: Path) -> Counter[str]:
    latest = (
        "SELECT run_id FROM runs WHERE command = 'filter' AND status = 'ok' ORDER BY finished_at DESC LIMIT 1"
    )
    return _rows(store, f"SELECT * FROM decisions WHERE run_id = ({latest})") + _rows(
        store, "SELECT * FROM scores"
    )


def _shards(_: Path, scratch: Path) -> Counter[str]:
    out = scratch / "mix"
    rows: Counter[str] = Counter()
    for path in sorted(out.glob("*/data/*.parquet")):
        for r in pq.read_table(path).to_pylist():
            rows[json.dumps({"kind": path.parts[-3], **r}, sort_keys=True, default=_plain)] += 1
    return rows


STAGES = [
    Stage("ingest", None, lambda s, _, __: ["ingest", "builtin:sample", "--store", s],
          lambda s, _: _rows(s, "SELECT * FROM samples") + _rows(s, "SELECT * FROM provenance")),
    Stage("score", "ingest", lambda s, _, __: ["score", "--store", s], lambda s, _: _rows(s, "SELECT * FROM scores")),
    Stage("generate", "score", lambda s, _, url: [
        "generate", "--store", s, "--teacher", f"openai:{url}#teacher", "--rounds", "2", "--n", "4",
        "--set", "flush_rows=8", "--set", "teacher_options.concurrency=4"],
          lambda s, _: _rows(s, "SELECT * FROM traces")),
    Stage("filter", "generate", lambda s, _, __: ["filter", "--store", s, "--min-score", "3"], _latest_decisions),
    Stage("mix", "filter", lambda s, out, __: ["mix", "--store", s, "--out", out / "mix", "--overwrite"], _shards),
]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A local teacher that solves about a third of the bundled problems (so round 2 has work)."""
    folder = tmp_path_factory.mktemp("teacher")
    store = folder / "store"
    run_cli("ingest", "builtin:sample", "--store", store)
    key = answer_key(store, folder / "key.json")
    with FakeOpenAIProcess(latency_s=0.01, answers=key, solve_rate=0.35) as srv:
        yield srv


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, teacher: Any) -> dict[str, tuple[Path, float]]:
    """Each stage run once, uninterrupted, after the one before it: (scratch folder, seconds)."""
    done: dict[str, tuple[Path, float]] = {}
    for stage in STAGES:
        scratch = tmp_path_factory.mktemp(f"whole-{stage.name}")
        if stage.before:
            _copy(done[stage.before][0], scratch)
        start = time.monotonic()
        run_cli(*stage.args(scratch / "store", scratch, teacher.url))
        done[stage.name] = (scratch, time.monotonic() - start)
    return done


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src / "store", dst / "store")


def _kill_at(args: list[str], delay: float) -> float | None:
    """Start `r1v-data ARGS`, SIGKILL it after `delay` seconds; None if it was still running, else
    the seconds it took."""
    start = time.monotonic()
    proc = subprocess.Popen([str(BIN / "r1v-data"), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    try:
        proc.wait(timeout=delay)
        return time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _kills(args: list[str], seconds: float, rng: random.Random) -> int:
    """KILLS kills at random moments of a run; how many landed while it ran. A run that finished
    first tells how long a run takes now (a re-run after a finished one reuses its work and is
    shorter), and later moments are drawn within that."""
    landed = 0
    for _ in range(KILLS):
        took = _kill_at(args, rng.uniform(0.0, seconds))
        landed += took is None
        seconds = seconds if took is None else min(seconds, took)
    return landed


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_killed_anywhere_and_resumed_equals_one_run(
    stage: Stage, finished: dict[str, tuple[Path, float]], teacher: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    whole, seconds = finished[stage.name]
    if stage.before:
        _copy(finished[stage.before][0], tmp_path)
    rng = random.Random(f"kill-{stage.name}")
    args = stage.args(tmp_path / "store", tmp_path, teacher.url)
    landed = _kills(args, seconds, rng)
    run_cli(*args)  # the run that finishes the work
    expected, got = stage.snapshot(whole / "store", whole), stage.snapshot(tmp_path / "store", tmp_path)
    with capsys.disabled():
        print(f"\nkill-anywhere {stage.name}: {KILLS} kills ({landed} while running) over a "
              f"{seconds:.1f} s run; {sum(got.values())} rows after resuming, "
              f"{sum(expected.values())} in one run, equal: {got == expected}")  # fmt: skip
    assert landed >= KILLS // 2, "most kills came after the run had finished: the test tested nothing"
    assert sum(expected.values()) > 0
    assert got - expected == Counter() and expected - got == Counter(), (
        f"rows only after kills: {sum((got - expected).values())}, "
        f"rows only in one run: {sum((expected - got).values())}"
    )
