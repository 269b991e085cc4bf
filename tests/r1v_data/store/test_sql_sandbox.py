"""`r1v-data sql` and `--where` run in the sandbox: they read the store's parts and nothing else,
write nothing, change no setting, and stop at their time limit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import ingest_json, run_cli

from r1v_data.errors import QueryError
from r1v_data.store import sandbox


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("sql") / "store"
    ingest_json("builtin:sample", "--store", store)
    return store


def _fingerprint(folder: Path) -> str:
    """Every file under `folder` with its bytes: any write shows."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


ESCAPES = [
    "COPY (SELECT * FROM samples) TO '{store}/traces/part-evil.parquet' (FORMAT parquet)",
    "COPY samples TO '{outside}/stolen.csv'",
    "ATTACH '{store}/r1v.duckdb' AS cat",
    "ATTACH '{store}/r1v.duckdb' AS cat; UPDATE cat.runs SET status = 'forged'",
    "SELECT * FROM read_text('{outside}/secret.txt')",
    "SELECT * FROM read_csv('{outside}/secret.txt')",
    "SELECT * FROM read_parquet('{store}/*/*.parquet')",
    "SELECT * FROM read_blob('{store}/r1v.duckdb')",
    "SELECT * FROM glob('{outside}/*')",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "CREATE TABLE x AS SELECT 1",
    "SELECT 1; COPY (SELECT 1) TO '{outside}/x.csv'",
    "EXPORT DATABASE '{outside}/dump'",
    "CALL pragma_version()",
]


@pytest.mark.parametrize("query", ESCAPES)
def test_sql_reads_only_the_store_and_writes_nothing(store: Path, tmp_path: Path, query: str) -> None:
    (tmp_path / "secret.txt").write_text("api_key=sk-do-not-read\n")
    before, outside_before = _fingerprint(store), sorted(tmp_path.iterdir())
    proc = run_cli("sql", query.format(store=store, outside=tmp_path), "--store", store, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert "sk-do-not-read" not in proc.stdout + proc.stderr
    assert _fingerprint(store) == before and sorted(tmp_path.iterdir()) == outside_before


def test_sql_still_answers_questions_and_says_when_it_cut_rows(store: Path) -> None:
    proc = run_cli("sql", "SELECT sample_id FROM samples ORDER BY sample_id", "--store", store,
                   "--json", "--limit", "5")  # fmt: skip
    assert len(json.loads(proc.stdout)) == 5 and "first 5 rows" in proc.stderr
    whole = run_cli("sql", "SELECT count(*) AS n FROM samples", "--store", store, "--json")
    assert json.loads(whole.stdout) == [{"n": 38}] and whole.stderr == ""
    runs = run_cli("sql", "SELECT command, status FROM runs", "--store", store, "--json")
    assert json.loads(runs.stdout) == [{"command": "ingest", "status": "ok"}]


def test_sql_stops_at_its_time_limit(store: Path) -> None:
    proc = run_cli("sql", "SELECT count(*) FROM range(1000000000000::BIGINT) a", "--store", store,
                   "--timeout", "1", check=False)  # fmt: skip
    assert proc.returncode == 1 and "time limit of 1 s" in proc.stderr


def test_where_expressions_stop_at_their_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "EXPRESSION_TIMEOUT_S", 0.5)
    table = pa.table({"sample_id": ["a", "b"], "difficulty": [1, 2]})
    with pytest.raises(QueryError, match="time limit"):
        sandbox.matching(table, "(SELECT count(*) FROM range(1000000000000::BIGINT)) > 0", "samples")
    assert sandbox.matching(table, "difficulty > 1", "samples") == ["b"]
