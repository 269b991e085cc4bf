"""What a `filter` run takes from an earlier one (`r1v_data.stages.filter_cache`): a re-run reuses
it with the same decisions, and each input it was made from invalidates it when it changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import ingest_geoqa, run_cli
from conftest import store_rows as _rows

from r1v_data.config import FilterConfig
from r1v_data.curation.decontam import benchmark_identity
from r1v_data.errors import ConfigError
from r1v_data.stages.filter import FilterResult, run_filter
from r1v_data.store import Store, utcnow

TEACHER = "geoqa_test_qwen2vl_7b_instruct_legacy"
STUDENT = "geoqa_test_qwen2vl_7b_grpo_2epochs_legacy"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """The GeoQA problems as text with one model's traces."""
    return ingest_geoqa(tmp_path_factory.mktemp("geo") / "store", shared, (TEACHER,))


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "store")
    return tmp_path / "store"


def _filter(store: Path, **kw: Any) -> FilterResult:
    return run_filter(FilterConfig(store=store, **kw))


def _decisions(store: Path, run_id: str) -> list[tuple[Any, ...]]:
    sql = "SELECT sample_id, request_id, stage, kept, reason FROM decisions WHERE run_id = ? ORDER BY ALL"
    return [tuple(r.values()) for r in _rows(store, sql, [run_id])]


def _add_traces(store: Path, traces: list[dict[str, Any]]) -> None:
    with Store.open(store, write=True) as s:
        run = s.begin_run("import-traces")
        s.write_part("traces", [{**t, "run_id": run, "created_at": utcnow()} for t in traces], run, 0)
        s.finish_run(run, "ok", {}, {})


def test_a_rerun_reuses_the_rewards_and_checks_and_decides_the_same(store: Path) -> None:
    first = _filter(store, min_score=3)
    again = _filter(store, min_score=3)
    assert (first.rewards_from, again.rewards_from) == (None, first.run_id)
    assert again.sample_checks_from == first.run_id
    assert again.rewards == {"scored": 0, "failed": 0}
    assert _decisions(store, again.run_id) == _decisions(store, first.run_id)
    other = _filter(store, min_score=4)  # another tau: the rewards still hold
    assert other.rewards_from == again.run_id and other.kept < again.kept  # the newest with that key


def test_the_same_filter_again_copies_its_decisions_and_any_change_decides_anew(store: Path) -> None:
    """A run whose configuration and inputs are an earlier run's writes that run's decision rows
    under its own run id; another setting, or new traces, and the decisions are computed."""
    first = _filter(store, min_score=3, best_k=2)
    again = _filter(store, min_score=3, best_k=2)
    assert (first.decisions_from, again.decisions_from) == (None, first.run_id)
    assert _decisions(store, again.run_id) == _decisions(store, first.run_id)
    same = ("samples", "samples_dropped", "traces", "kept", "dropped")
    assert [getattr(again, k) for k in same] == [getattr(first, k) for k in same]
    assert _rows(store, "SELECT count(*) AS n FROM decisions WHERE run_id = ?", [again.run_id])[0]["n"] > 0
    assert _filter(store, min_score=3, best_k=1).decisions_from is None
    assert _filter(store, min_score=3, best_k=2).decisions_from == again.run_id  # the newest with that key
    new = [
        {**t, "request_id": "new-" + t["request_id"]} for t in _rows(store, "SELECT * FROM traces LIMIT 3")
    ]
    _add_traces(store, new)
    r = _filter(store, min_score=3, best_k=2)
    assert r.decisions_from is None and r.traces == first.traces + 3


def test_decisions_are_computed_again_when_the_earlier_part_is_not_whole(store: Path) -> None:
    """The copy reads the earlier run's own part; a part cut short is not copied, the decisions
    are computed."""
    first = _filter(store, min_score=3)
    part = store / "decisions" / f"part-{first.run_id}-00001.parquet"
    pq.write_table(pq.read_table(part).slice(0, 10), part)
    again = _filter(store, min_score=3)
    assert again.decisions_from is None and again.kept == first.kept


def test_new_traces_are_scored_after_a_cached_run(store: Path) -> None:
    """New traces change the traces' parts: the rewards memo must not hide their missing rewards."""
    _filter(store, min_score=3)
    new = [{**t, "request_id": "new-" + t["request_id"], "verdict": "correct"}
           for t in _rows(store, "SELECT * FROM traces ORDER BY request_id LIMIT 5")]  # fmt: skip
    _add_traces(store, new)
    r = _filter(store, min_score=3)
    assert r.rewards_from is None and r.rewards["scored"] == len(new)
    reasons = {d[1]: d[4] for d in _decisions(store, r.run_id) if d[1]}
    assert all("reward missing" not in reasons[t["request_id"]] for t in new)


def test_a_request_answered_twice_after_a_cached_run_is_decided_once(store: Path) -> None:
    """The traces memo said every request id was unique; a repeated one must bring back the
    window that picks its latest trace."""
    _filter(store, keep_wrong=True)
    wrong = _rows(store, "SELECT * FROM traces WHERE verdict = 'wrong' ORDER BY request_id LIMIT 3")
    _add_traces(store, [{**t, "verdict": "correct"} for t in wrong])
    r = _filter(store, keep_wrong=True)
    decisions = [d for d in _decisions(store, r.run_id) if d[1]]
    assert len(decisions) == len({d[1] for d in decisions}) == r.traces


def test_a_newer_reward_row_decides_after_a_cached_run(store: Path) -> None:
    """Each trace had one reward row, and the decision query read it as it was; a second, newer
    row for a trace changes the scores and must bring back picking the latest."""
    first = _filter(store, min_score=3)
    kept = next(d for d in _decisions(store, first.run_id) if d[1] and d[3])
    row = _rows(store, "SELECT * FROM scores WHERE request_id = ? AND name = 'reward'", [kept[1]])[0]
    with Store.open(store, write=True) as s:
        run = s.begin_run("score")
        s.write_part("scores", [{**row, "value": 0.0, "run_id": run, "created_at": utcnow()}], run, 0)
        s.finish_run(run, "ok", {}, {})
    r = _filter(store, min_score=3)
    assert r.rewards_from is None
    mine = [d for d in _decisions(store, r.run_id) if d[1] == kept[1]]
    assert len(mine) == 1 and not mine[0][3] and "reward below threshold: 0" in mine[0][4]


def test_lost_reward_rows_are_scored_again(store: Path) -> None:
    first = _filter(store, min_score=3)
    for part in (store / "scores").glob(f"part-{first.run_id}-*.parquet"):
        part.unlink()
    r = _filter(store, min_score=3)
    assert r.rewards_from is None and r.rewards["scored"] == first.rewards["scored"]


def test_the_rewards_memo_is_per_student(store: Path, shared: Path) -> None:
    _filter(store, min_score=3)
    logs = shared / "traces" / "r1v_eval_logs"
    run_cli("import-traces", logs / f"{STUDENT}.json", "--store", store, "--teacher", STUDENT)
    with_student = _filter(store, min_score=3)  # the student's traces are candidates: scored
    assert with_student.rewards_from is None and with_student.rewards["scored"] > 0
    errors = _filter(store, min_score=3, errors_from=STUDENT)  # now they are not: another key
    assert errors.rewards_from is None and errors.error_set > 0
    assert _filter(store, min_score=3, errors_from=STUDENT).rewards_from == errors.run_id
    assert _filter(store, min_score=3).rewards_from == with_student.run_id


def test_a_changed_benchmark_file_runs_the_checks_again(store: Path, tmp_path: Path) -> None:
    """Benchmarks are keyed by their file's content, not loaded, when the checks are reused: a
    question added to the file under the same name must be found."""
    question = _rows(store, "SELECT question FROM samples ORDER BY sample_id LIMIT 1")[0]["question"]
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "What is the sum of the angles of a triangle?"}) + "\n")
    spec = f"{bench}#question=question"
    first = _filter(store, min_score=3, decontaminate=[spec])
    assert first.samples_dropped.get("decontamination", 0) == 0
    again = _filter(store, min_score=3, decontaminate=[spec])
    assert again.sample_checks_from == first.run_id
    bench.write_text(bench.read_text() + json.dumps({"question": question}) + "\n")
    changed = _filter(store, min_score=3, decontaminate=[spec])
    assert changed.sample_checks_from is None and changed.samples_dropped["decontamination"] >= 1


def test_benchmark_identity_follows_content_and_settings(tmp_path: Path) -> None:
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "Find x if 2x + 3 = 7 and x is an integer."}) + "\n")
    spec = f"{bench}#question=question"
    base = benchmark_identity(spec)
    assert benchmark_identity(spec) == base
    assert benchmark_identity(spec, ngram=8) != base
    assert benchmark_identity(spec, min_fraction=0.1) != base
    assert benchmark_identity(spec, max_distance=2) != base
    assert benchmark_identity(f"{bench}#question=question&name=other") != base
    bench.write_text(json.dumps({"question": "Find y if 2y + 3 = 7 and y is an integer."}) + "\n")
    assert benchmark_identity(spec) != base  # same size, other content


def test_a_benchmark_no_preset_reads_is_refused_before_the_run_begins(store: Path, tmp_path: Path) -> None:
    """Benchmarks are no longer loaded before the run (only when the checks run): their spec and
    preset are still checked first."""
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "What is 2 + 2?"}) + "\n")
    with pytest.raises(ConfigError, match="no preset matches"):
        _filter(store, min_score=3, decontaminate=[str(bench)])
    assert not _rows(store, "SELECT * FROM runs WHERE command = 'filter'")
