"""No key in anything r1v stores or prints (issue 14, item 3): a teacher that echoes the
Authorization header, a key written into the teacher's URL, a key in a judge's URL. Each run goes
through the real CLI; the store is then read with DuckDB and byte by byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import BIN, ingest_json, run_cli
from servers.fake_openai import FakeOpenAI, FakeOpenAIProcess, request_text

from r1v_data.readers.sources import bundled_sample_dir

# (environment variable, key): a name r1v recognises as a key's, and one it cannot guess, whose
# value only the backend that read it knows
KEYS = [
    ("OPENAI_API_KEY", "sk-proj-" + "Zx81" * 8),
    ("TEAM_LLM_CRED", "zq7" + "Mf3e" * 7),
]
URL_KEY = "Pw9" + "kT4q" * 6
SAMPLES = [json.loads(line) for line in (bundled_sample_dir() / "sample.jsonl").read_text().splitlines()]
FAST = ("--set", "teacher_options.max_retries=1", "--set", "teacher_options.backoff_base_s=0.01")


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    return store


@pytest.fixture(autouse=True)
def _no_user_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def stored_text(store: Path) -> str:
    """Every value the store holds that could carry a key: trace errors, runs, manifests (read
    with DuckDB), and the bytes of every file that is not compressed Parquet."""
    con = duckdb.connect()
    try:
        errors = con.sql(f"SELECT error FROM read_parquet('{store}/traces/*.parquet')").fetchall()
        con.execute(f"ATTACH '{store}/r1v.duckdb' AS s (READ_ONLY)")
        runs = con.sql("SELECT * FROM s.runs").fetchall() + con.sql("SELECT * FROM s.manifests").fetchall()
    finally:
        con.close()
    files = [p.read_bytes().decode("utf-8", "replace") for p in store.rglob("*") if p.is_file()]
    return repr(errors) + repr(runs) + "".join(files)


def test_a_server_echoing_the_authorization_header_never_stores_the_key(
    sample_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env, key in KEYS:
        monkeypatch.setenv(env, key)
    with FakeOpenAIProcess(faults={"*": ["echoauth"] * 4}) as srv:
        for env, key in KEYS:
            proc = run_cli(
                "generate", "--store", sample_store, "--teacher", f"openai:{srv.url}#m", "--limit", "3",
                "--set", f"teacher_options.api_key_env={env}", *FAST, "--json",
            )  # fmt: skip
            assert sum(json.loads(proc.stdout)["failed"].values()) == 3
            assert key not in proc.stdout + proc.stderr
    stored = stored_text(sample_store)
    assert "debug: Authorization: Bearer ***" in stored  # the failures are recorded, scrubbed
    assert all(key not in stored for _, key in KEYS)


@pytest.mark.parametrize("reachable", [True, False], ids=["answers", "nothing-listens"])
def test_a_key_in_the_teachers_url_is_never_stored_or_printed(sample_store: Path, reachable: bool) -> None:
    with FakeOpenAIProcess() as srv:
        url = srv.url if reachable else "http://127.0.0.1:9/v1"
        teacher = f"openai:{url.replace('http://', f'http://me:{URL_KEY}@')}#m"
        proc = run_cli("generate", "--store", sample_store, "--teacher", teacher, "--limit", "2", check=False)
    assert proc.returncode == (0 if reachable else 1)
    assert URL_KEY not in proc.stdout + proc.stderr
    stored = stored_text(sample_store)
    assert "http://me:***@127.0.0.1" in stored and URL_KEY not in stored


def test_a_key_in_a_judges_url_is_never_stored_and_its_scores_still_mix(
    sample_store: Path, tmp_path: Path
) -> None:
    """The judge's version (in `scores` and the filter's manifest) drops the key, and the two
    still agree: mix finds the preference pairs by that version."""
    with FakeOpenAI(reply=_right_answer) as teacher:
        run_cli("generate", "--store", sample_store, "--teacher", f"openai:{teacher.url}#m", "--limit", "4",
                "--n", "3")  # fmt: skip
    with FakeOpenAI(reply=lambda body: json.dumps({"reward": len(request_text(body)) % 6})) as judge:
        reward = f"judge:openai:{judge.url.replace('http://', f'http://me:{URL_KEY}@')}#judge"
        proc = run_cli("filter", "--store", sample_store, "--reward", reward, "--no-dedup", "--json")
    mixed = run_cli(
        "mix", "--store", sample_store, "--out", tmp_path / "mix", "--kind", "preference", "--json"
    )
    assert json.loads(mixed.stdout)["rows"]["preference"] > 0
    assert URL_KEY not in proc.stdout + proc.stderr + stored_text(sample_store)
    assert "http://me:***@" in stored_text(sample_store)


def _right_answer(body: dict[str, Any]) -> str:
    """The reference answer, reasoned at a length that varies with the seed (so rewards differ)."""
    text = request_text(body)
    answer = next(s["answer"] for s in SAMPLES if s["question"] in text)
    return f"<think>\n{'Count again. ' * (body['seed'] % 7)}\n</think>\n\n\\boxed{{{answer}}}"


def test_the_lock_of_a_killed_run_holds_no_key(sample_store: Path) -> None:
    with FakeOpenAIProcess(latency_s=0.2) as srv:
        teacher = f"openai:{srv.url.replace('http://', f'http://me:{URL_KEY}@')}#m"
        proc = subprocess.Popen(
            [str(BIN / "r1v-data"), "generate", "--store", str(sample_store), "--teacher", teacher],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        lock, deadline = sample_store / ".lock", time.monotonic() + 120
        while time.monotonic() < deadline and srv.stats()["total"] == 0:  # holding the lock, sending
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    holder = json.loads(lock.read_text())  # a killed writer leaves its lock file as it was
    assert "http://me:***@" in holder["command"] and URL_KEY not in lock.read_text()
