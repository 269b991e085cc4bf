"""`openai-batch:` and `anthropic-batch:` against a local fake of both batch APIs: batches split to
limits and recorded before polling, results matched by custom_id, expired batches resubmitting only
what has no result, per-request errors, slow finalizing, --no-wait, and a SIGKILL while polling."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN
from conftest import store_rows as rows
from servers.fake_batch import FakeBatchAPI

from r1v_data.config import GenerateConfig
from r1v_data.stages.generate import run_generate
from r1v_data.store import Store

FAST = {"poll_interval_s": 0.01, "backoff_base_s": 0.01}


@pytest.fixture
def store(sample_store: Path) -> Path:
    return sample_store


def teacher(srv: FakeBatchAPI, provider: str) -> str:
    return (
        f"openai-batch:{srv.url}#gpt-fake"
        if provider == "openai"
        else f"anthropic-batch:{srv.url}#claude-fake"
    )


def generate(store: Path, spec: str, limit: int = 10, notes: list[str] | None = None, **options: Any) -> Any:
    cfg = GenerateConfig(store=store, teacher=spec, limit=limit, teacher_options={**FAST, **options})

    def progress(done: int, total: int | None, tokens: int, note: str = "") -> None:
        if notes is not None and note:
            notes.append(note)

    return run_generate(cfg, progress=progress)


def one_trace_each(store: Path) -> list[dict[str, Any]]:
    traces = rows(store, "SELECT * FROM traces")
    assert len(traces) == len({t["request_id"] for t in traces}), "a request has two traces"
    return traces


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batches_split_to_limits_recorded_and_collected(store: Path, provider: str) -> None:
    with FakeBatchAPI(progress_polls=2) as srv:
        result = generate(store, teacher(srv, provider), max_requests=4)
        assert [len(b.lines) for b in srv.batches] == [4, 4, 2]
        assert set(srv.sent.values()) == {1}
    assert result.sent == 10 and sum(result.verdicts.values()) == 10
    traces = one_trace_each(store)
    assert len(traces) == 10 and all(t["error"] is None and t["completion_tokens"] for t in traces)
    assert {t["teacher"] for t in traces} == {
        f"{provider}:{'gpt-fake' if provider == 'openai' else 'claude-fake'}"
    }
    events = rows(store, "SELECT batch_id, event, attempt, state, results FROM batches ORDER BY created_at")
    assert [e["event"] for e in events][:3] == ["submitted"] * 3  # all recorded before the first poll
    assert sorted(e["batch_id"] for e in events if e["event"] == "collected") == sorted(
        b.id for b in srv.batches
    )
    if provider == "anthropic":
        assert srv.headers[0]["anthropic-version"] == "2023-06-01"
        messages = json.loads(rows(store, "SELECT prompt FROM traces LIMIT 1")[0]["prompt"])["messages"]
        assert messages[-1] == {"role": "assistant", "content": "<think>"}  # no trailing whitespace


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expired_batch_resubmits_only_requests_without_a_result(store: Path, provider: str) -> None:
    with FakeBatchAPI(expire={0}) as srv:
        generate(store, teacher(srv, provider))
        first, again = srv.batches
        assert len(first.lines) == 10 and len(again.lines) == 5
        ran = {line["custom_id"] for line in first.lines[:5]}
        assert {line["custom_id"] for line in again.lines}.isdisjoint(ran)
        assert all(srv.sent[r] == (1 if r in ran else 2) for r in srv.sent)
    assert len(one_trace_each(store)) == 10
    events = rows(store, "SELECT batch_id, event, attempt, results, missing, detail FROM batches WHERE event = 'collected' ORDER BY created_at")  # fmt: skip
    assert [(e["attempt"], e["results"], e["missing"]) for e in events] == [(1, 5, 5), (2, 5, 0)]
    resubmitted = rows(
        store, f"SELECT detail FROM batches WHERE batch_id = '{again.id}' AND event = 'submitted'"
    )
    assert first.id in resubmitted[0]["detail"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_per_request_errors_are_results_not_resubmitted(store: Path, provider: str) -> None:
    with FakeBatchAPI(reject="How many") as srv:
        result = generate(store, teacher(srv, provider))
        assert len(srv.batches) == 1 and set(srv.sent.values()) == {1}
    traces = one_trace_each(store)
    rejected = [t for t in traces if t["finish_reason"] == "rejected"]
    assert rejected and all("invalid" in t["error"] for t in rejected)
    assert result.sent == 10 and len(traces) == 10
    with FakeBatchAPI() as srv:  # a rejection is final: the next run sends nothing
        generate(store, teacher(srv, provider))
        assert srv.batches == []


def test_slow_finalizing_is_reported_and_waited_for(store: Path) -> None:
    notes: list[str] = []
    with FakeBatchAPI(progress_polls=1, finalizing_polls=6) as srv:
        generate(store, teacher(srv, "openai"), limit=4, notes=notes)
        assert srv.batches[0].polls >= 8
    assert any("1 finalizing batches" in n and "0/4 collected" in n for n in notes), notes
    assert any("1 in_progress batches" in n for n in notes)
    assert len(one_trace_each(store)) == 4


def test_no_wait_submits_and_a_later_run_collects(store: Path) -> None:
    with FakeBatchAPI(progress_polls=3) as srv:
        first = generate(store, teacher(srv, "openai"), wait=False)
        assert first.waiting["requests"] == 10 and first.waiting["batches"] == 1
        assert rows(store, "SELECT count(*) AS n FROM traces")[0]["n"] == 0
        status = rows(store, f"SELECT status FROM runs WHERE run_id = '{first.run_id}'")
        assert status[0]["status"] == "submitted"
        second = generate(store, teacher(srv, "openai"))
        assert len(srv.batches) == 1 and set(srv.sent.values()) == {1}
    assert second.sent == 10 and len(one_trace_each(store)) == 10


def test_sigkill_while_polling_resumes_the_same_batches(store: Path) -> None:
    with FakeBatchAPI(hold=True) as srv:
        spec = teacher(srv, "openai")
        opts = ["--set", "teacher_options.poll_interval_s=0.05", "--set", "teacher_options.max_requests=6"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([str(BIN / "r1v-data"), "generate", "--store", str(store), "--teacher", spec,
                                 "--limit", "10", *opts], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (len(srv.batches) == 2 and min(b.polls for b in srv.batches) >= 3):
                assert time.monotonic() < deadline and proc.poll() is None, "the run never started polling"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        recorded = rows(store, "SELECT batch_id, event FROM batches")
        assert sorted(r["batch_id"] for r in recorded) == [b.id for b in srv.batches]
        assert {r["event"] for r in recorded} == {"submitted"}
        srv.hold = False
        result = generate(store, spec, max_requests=6)
        assert len(srv.batches) == 2 and set(srv.sent.values()) == {1}  # polled again, never resubmitted
    assert result.sent == 10 and len(one_trace_each(store)) == 10
    collected = rows(store, "SELECT batch_id FROM batches WHERE event = 'collected'")
    assert sorted(r["batch_id"] for r in collected) == [b.id for b in srv.batches]


def _judge(body: dict[str, Any]) -> str:
    fields = {"image_necessity": 4, "question_quality": 4, "difficulty": 3, "reasoning_demand": 2}
    return json.dumps({**fields, "integration": 4, "reward": len(json.dumps(body)) % 6})


def test_score_judge_and_filter_reward_judge_run_through_a_batch_judge(store: Path) -> None:
    from r1v_data.config import FilterConfig, ScoreConfig
    from r1v_data.stages.filter import run_filter
    from r1v_data.stages.score import run_score

    with FakeBatchAPI(reply=_judge) as judge, FakeBatchAPI() as srv:
        spec = f"openai-batch:{judge.url}#judge-fake"
        price = {"judge-fake": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
        scored = run_score(ScoreConfig(store=store, judge=spec, judge_options=FAST, limit=6, prices=price))
        assert scored.scored == {"qdam": 6, "vtia": 6} and len(judge.batches) == 2  # one per scorer
        assert scored.prompt_tokens > 0 and scored.cost["usd"] == pytest.approx(
            (scored.prompt_tokens * 1.0 + scored.completion_tokens * 2.0) / 1e6 * 0.5
        )
        generate(store, teacher(srv, "openai"), limit=6)
        run_filter(FilterConfig(store=store, reward=f"judge:{spec}", reward_options=FAST))
        assert len(judge.batches) == 3 and set(judge.sent.values()) == {1}
    judged = rows(store, "SELECT count(*) AS n FROM scores WHERE scorer = 'judge' AND value IS NOT NULL")
    assert judged[0]["n"] == 6
    from r1v_data.stages.stats import store_stats

    judge_cost = store_stats(Store.open(store))["cost"]["by_teacher"]["openai:judge-fake"]
    assert judge_cost["prompt_tokens"] == scored.prompt_tokens and judge_cost["usd"] == scored.cost["usd"]
    recorded = rows(store, "SELECT DISTINCT teacher, event FROM batches WHERE teacher = 'openai:judge-fake'")
    assert {r["event"] for r in recorded} == {"submitted", "collected"}


def test_reviser_through_a_batch_api(store: Path) -> None:
    with FakeBatchAPI() as srv:
        cfg = GenerateConfig(store=store, teacher=teacher(srv, "openai"), limit=6, teacher_options=FAST,
                             reviser=teacher(srv, "anthropic"), reviser_options=FAST)  # fmt: skip
        result = run_generate(cfg)
        assert set(srv.sent.values()) == {1}
    revised = rows(store, "SELECT * FROM traces WHERE provenance LIKE 'revised:%'")
    assert revised and result.rounds[-1]["revision"] == 1
    assert {t["teacher"] for t in revised} == {"anthropic:claude-fake"}
    assert len(one_trace_each(store)) == 6 + len(revised)


def test_a_store_from_before_the_batches_table_opens_fine(store: Path) -> None:
    from r1v_data.store.repair import diagnose

    shutil.rmtree(store / "batches")  # as r1v 0.2 before batch backends left it
    info = json.loads((store / "store.json").read_text())
    del info["schemas"]["batches"]
    (store / "store.json").write_text(json.dumps(info))
    assert rows(store, "SELECT count(*) AS n FROM batches") == [{"n": 0}]
    assert diagnose(store) == []
    with FakeBatchAPI() as srv:
        generate(store, teacher(srv, "openai"), limit=2)
    assert len(rows(store, "SELECT * FROM batches")) == 2  # submitted, collected
    assert "batches" in json.loads((store / "store.json").read_text())["schemas"]


def test_a_cancelled_batch_fails_its_requests_for_this_run_and_the_next_run_sends_them(store: Path) -> None:
    from r1v_data.backends import make_backend

    with FakeBatchAPI(hold=True) as srv:
        spec = teacher(srv, "openai")
        first = generate(store, spec, limit=4, wait=False)  # submitted, then a person cancels it
        assert first.waiting["requests"] == 4
        backend = make_backend(spec, **FAST)
        backend.adapter.cancel(srv.batches[0].id)
        srv.hold = False
        cancelled = generate(store, spec, limit=4)
        assert len(srv.batches) == 1 and cancelled.failed  # not resubmitted by the run that saw it end
        again = generate(store, spec, limit=4)
        assert len(srv.batches) == 2 and again.sent == 4 and set(srv.sent.values()) == {2}
    traces = rows(store, "SELECT error FROM traces WHERE error IS NOT NULL")
    assert len(traces) == 4 and all("ended cancelled" in t["error"] for t in traces)
    states = rows(store, "SELECT state FROM batches WHERE event = 'collected' ORDER BY created_at")
    assert [s["state"] for s in states] == ["cancelled", "completed"]


def test_nothing_listening_fails_at_once_naming_the_url(store: Path) -> None:
    from r1v_data.backends.base import BackendError

    start = time.monotonic()
    with pytest.raises(BackendError, match=r"nothing answers at http://127\.0\.0\.1:9/v1"):
        generate(store, "openai-batch:http://127.0.0.1:9/v1#gpt-fake", limit=2)
    assert time.monotonic() - start < 20  # no backoff for a URL where nothing ever answered
    assert rows(store, "SELECT count(*) AS n FROM batches") == [{"n": 0}]
