"""Ctrl-C in the middle of `generate`, as a terminal sends it (SIGINT to the whole process group):
one line saying what was saved and how to resume, exit 130, the run recorded as `interrupted`, and
a resume that sends exactly what was not saved."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from conftest import BIN, ingest_json, run_cli
from servers.fake_openai import FakeOpenAIProcess

from r1v_data.store import SCHEMA_PART, Store


def _start(args: list[str]) -> subprocess.Popen[str]:
    """`r1v-data ARGS` in its own process group, as a shell starts a job: a terminal's Ctrl-C
    reaches the whole group. SIGINT is set back to its default first: a test run started in the
    background by a non-interactive shell inherits it ignored, and Python then never raises
    KeyboardInterrupt."""
    return subprocess.Popen(
        [str(BIN / "r1v-data"), *args],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


def _wait_for_parts(folder: Path, n: int, proc: subprocess.Popen[str], limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while (
        len([p for p in folder.glob("part-*.parquet") if p.name != SCHEMA_PART]) < n
    ):  # traces, not the schema's
        assert proc.poll() is None, f"generate ended before it was interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no traces reached the store"
        time.sleep(0.1)


def test_ctrl_c_during_generate_says_what_was_saved_exits_130_and_resumes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess(latency_s=0.4) as srv:
        args = ["generate", "--store", str(store), "--teacher", f"openai:{srv.url}#m",
                "--set", "teacher_options.concurrency=2", "--set", "flush_rows=1"]  # fmt: skip
        proc = _start(args)
        _wait_for_parts(store / "traces", 4, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        resumed = json.loads(run_cli(*args, "--json").stdout)
    assert proc.returncode == 130
    assert "Traceback" not in err and "Aborted" not in err
    last = err.strip().splitlines()[-1]
    said = re.fullmatch(
        r"interrupted: generate run (\S+) saved (\d+) traces \(run recorded as interrupted\); "
        r"run the same command to resume: r1v-data (.*)",
        last,
    )
    assert said, err
    run_id, saved, again = said.group(1), int(said.group(2)), said.group(3)
    assert shlex.split(again) == args
    con = Store.open(store)
    assert con.query("SELECT status FROM runs WHERE run_id = ?", params=[run_id])[1] == [("interrupted",)]
    kept = con.query("SELECT count(*) FROM traces WHERE run_id = ?", params=[run_id])[1][0][0]
    assert 4 <= saved == kept < 38
    assert (resumed["skipped"], resumed["sent"], resumed["failed"]) == (saved, 38 - saved, {})
    total = con.query("SELECT count(*), count(DISTINCT request_id) FROM traces")[1]
    assert total == [(38, 38)]  # nothing lost, nothing twice


def test_ctrl_c_while_filter_asks_a_judge_records_the_run_and_keeps_no_decisions(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess() as teacher:
        run_cli("generate", "--store", store, "--teacher", f"openai:{teacher.url}#m")
    with FakeOpenAIProcess(latency_s=1.0) as judge:
        args = ["filter", "--store", str(store), "--no-dedup", "--reward", f"judge:openai:{judge.url}#j"]
        proc = _start(args)
        deadline = time.monotonic() + 60
        while not judge.stats()["total"]:  # the judge has been asked: filter is scoring
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    said = re.search(r"interrupted: filter run (\S+) kept its cached rewards; no decisions", err)
    assert said, err
    con, run = Store.open(store), [said.group(1)]
    assert con.query("SELECT status FROM runs WHERE run_id = ?", params=run)[1] == [("interrupted",)]
    assert con.query("SELECT count(*) FROM decisions WHERE run_id = ?", params=run)[1] == [(0,)]
