"""Defaults that keep wrong answers out of training data unless asked, through the real CLI on the
MATH-Vision outputs: a plain `filter` keeps only verified-correct traces, `mix --kind preference`
never chooses a wrong trace, `filter` with nothing to filter fails, and short questions that
differ only in case or spacing are duplicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import ingest_json, mathv_with_outputs, run_cli

from r1v_data.store import Store


def _filter(store: Path, *args: object) -> dict[str, Any]:
    return json.loads(run_cli("filter", "--store", store, *args, "--json").stdout)


def _rows(store: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = Store.open(store).connect()
    try:
        return con.sql(sql, params=params).fetchall()
    finally:
        con.close()


_DECIDED = """SELECT t.verdict, d.kept, d.stage, d.reason FROM decisions d JOIN traces t USING (request_id)
              WHERE d.run_id = ?"""


@pytest.fixture(scope="module")
def mathv(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    return mathv_with_outputs(tmp_path_factory.mktemp("defaults") / "store", shared)


def test_a_plain_filter_keeps_only_verified_correct_traces_and_says_so(mathv: Path) -> None:
    shown = run_cli("filter", "--store", mathv, "--no-dedup").stdout
    assert "kept: verified-correct traces only (no --min-score/--iteration; --keep-wrong keeps" in shown
    r = _filter(mathv, "--no-dedup")
    decided = _rows(mathv, _DECIDED, [r["run_id"]])
    correct = sum(verdict == "correct" for verdict, *_ in decided)
    assert len(decided) == r["traces"] == 912 and 100 < correct < 912
    assert r["kept"] == correct and r["dropped"] == {"verdict": 912 - correct}
    assert all(kept == (verdict == "correct") for verdict, kept, _, _ in decided)
    reasons = {reason for verdict, _, stage, reason in decided if stage == "verdict"}
    assert reasons == {
        "not verified correct (wrong): with no --min-score/--iteration only correct traces are kept "
        "(--keep-wrong keeps the others)"
    }
    everything = _filter(mathv, "--no-dedup", "--keep-wrong")
    assert (everything["kept"], everything["selection"]) == (
        912,
        "every trace, wrong ones included (--keep-wrong)",
    )
    threshold = _filter(mathv, "--no-dedup", "--min-score", "3")
    assert threshold["selection"] == "reward level >= tau 3" and threshold["kept"] <= correct
    both = run_cli("filter", "--store", mathv, "--keep-wrong", "--min-score", "3", check=False)
    assert both.returncode == 1 and both.stderr.count("\n") == 1 and "not both" in both.stderr


@pytest.mark.parametrize("filter_args", [("--keep-wrong",), ("--min-score", "0")])
def test_preference_pairs_never_choose_a_wrong_trace(mathv: Path, tmp_path: Path, filter_args: tuple) -> None:
    """With every trace kept, the best-rewarded kept trace of a sample whose traces are all wrong
    (rule reward 2 against 1) used to become a pair's chosen answer."""
    run_cli("filter", "--store", mathv, "--no-dedup", *filter_args)
    run_cli("mix", "--store", mathv, "--out", tmp_path / "mix", "--kind", "preference")
    pairs = pq.read_table(tmp_path / "mix" / "preference").to_pylist()
    verdict = dict(_rows(mathv, "SELECT request_id, verdict FROM traces"))
    assert len(pairs) > 50
    assert {verdict[p["chosen_request_id"]] for p in pairs} == {"correct"}
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    solved = {
        sid for (sid,) in _rows(mathv, "SELECT DISTINCT sample_id FROM traces WHERE verdict = 'correct'")
    }
    assert {p["sample_id"] for p in pairs} <= solved


def test_filter_with_no_traces_fails_in_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    proc = run_cli("filter", "--store", store, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "has no traces to filter" in proc.stderr
    assert "r1v-data generate" in proc.stderr and "import-traces" in proc.stderr
    assert _rows(store, "SELECT count(*) FROM runs WHERE command = 'filter'") == [(0,)]  # nothing recorded


def test_short_questions_differing_in_case_or_spacing_are_duplicates(tmp_path: Path) -> None:
    """Too short for word 5-gram MinHash: one shingle each, and "13?" vs "13 ?" is another one."""
    questions = [
        "What is 6+7?",
        "what is 6 + 7 ?",
        "WHAT IS  6+7?",
        "What is 6+8?",
        "Is it 13?",
        "is it 13 ?",
    ]
    rows = [{"id": str(i), "question": q, "answer": "13", "images": []} for i, q in enumerate(questions)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    traces = [{"id": str(i), "response": "\\boxed{13}"} for i in range(len(questions))]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    store = tmp_path / "store"
    assert ingest_json(tmp_path / "q.jsonl", "--store", store, "--preset", "native")["added"] == 6
    run_cli("import-traces", tmp_path / "t.jsonl", "--store", store, "--teacher", "t")
    r = _filter(store)
    assert r["samples_dropped"] == {"dedup": 3}
    dropped = _rows(
        store,
        """SELECT s.source_id, d.reason FROM decisions d JOIN samples s USING (sample_id)
           WHERE d.run_id = ? AND d.request_id IS NULL AND NOT d.kept ORDER BY 1""",
        [r["run_id"]],
    )
    assert [source_id for source_id, _ in dropped] == ["1", "2", "5"]
    assert all("(exact: same text and images)" in reason for _, reason in dropped)
