"""`r1v-data generate` through the real CLI: hf and builtin teachers on CPU, an OpenAI-compatible
local server, resume after SIGKILL, self-distillation rounds and image policies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, answer_key, ingest_json, run_cli
from servers.fake_openai import FakeOpenAIProcess
from tiny_models import VLM_IMAGE_TOKENS, build_tiny_llama, build_tiny_vlm

from r1v_data.stages.generate_grading import DEPTH
from r1v_data.store import Store


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    return store


def _generate(store: Path, *args: object) -> dict:
    return json.loads(run_cli("generate", "--store", store, *args, "--json").stdout)


def _traces(store: Path, sql: str = "SELECT * FROM traces") -> list[dict]:
    con = Store.open(store).connect()
    try:
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()


def test_hf_teacher_writes_one_verified_trace_per_request_and_resumes(
    sample_store: Path, tiny_model: Path
) -> None:
    args = (
        "--teacher",
        f"hf:{tiny_model}",
        "--limit",
        "5",
        "--n",
        "2",
        "--max-tokens",
        "12",
        "--temperature",
        "1.0",
        "--repetition-penalty",
        "1.3",
    )
    first = _generate(sample_store, *args)
    assert (first["requests"], first["sent"], first["skipped"]) == (10, 10, 0)
    traces = _traces(sample_store)
    assert len(traces) == 10 and len({t["request_id"] for t in traces}) == 10
    for t in traces:
        assert t["sampling"]["max_tokens"] == 12 and t["sampling"]["repetition_penalty"] == 1.3
        assert t["sampling"]["n"] == 2 and t["teacher"] == f"hf:{tiny_model}"
        assert t["verdict"] in ("correct", "wrong") and t["verifier"].startswith("r1v-verify")
        assert t["finish_reason"] in ("stop", "length") and t["completion_tokens"] <= 12
        assert t["prompt"].endswith("<|assistant|>\n<think>\n")  # R1V's assistant prefix, prefilled
    seeds = sorted(t["sampling"]["seed"] for t in traces)
    assert seeds == [0] * 5 + [1] * 5  # sample index 0 and 1 of each problem
    again = _generate(sample_store, *args)
    assert (again["sent"], again["skipped"]) == (0, 10)
    assert len(_traces(sample_store)) == 10


def test_rounds_regenerate_only_problems_without_a_correct_trace(
    sample_store: Path, tiny_model: Path
) -> None:
    result = _generate(
        sample_store,
        "--teacher",
        f"hf:{tiny_model}",
        "--limit",
        "6",
        "--max-tokens",
        "8",
        "--rounds",
        "2",
    )
    round1, round2 = result["rounds"]
    assert round1["requests"] == 6
    correct_after_1 = {
        t["sample_id"] for t in _traces(sample_store) if t["round"] == 1 and t["verdict"] == "correct"
    }
    assert round2["samples"] == 6 - len(correct_after_1)
    assert {t["sample_id"] for t in _traces(sample_store) if t["round"] == 2}.isdisjoint(correct_after_1)


def test_text_only_teacher_uses_captions_or_refuses(tmp_path: Path, tiny_model: Path, shared: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    result = _generate(
        store,
        "--teacher",
        f"hf:{tiny_model}",
        "--max-tokens",
        "4",
        "--where",
        "source_id IN ('count-000', '4')",
    )
    assert (result["sent"], result["refused"]) == (
        1,
        1,
    )  # the sample has a caption, MATH-Vision none
    rows = {t["sample_id"][:0] + (t["error"] or "ok") for t in _traces(store)}
    assert "refused: text-only teacher and the sample has images but no caption" in rows
    (captioned,) = _traces(store, "SELECT prompt FROM traces WHERE error IS NULL")
    assert "Description of the image(s): A white picture with" in captioned["prompt"]
    refuse = _generate(
        store,
        "--teacher",
        f"hf:{tiny_model}",
        "--max-tokens",
        "4",
        "--set",
        "image_policy=refuse",
        "--where",
        "source_id = 'count-000'",
        "--seed",
        "7",
    )
    assert refuse["refused"] == 1 and refuse["sent"] == 0


def test_hf_vision_language_teacher_sees_the_images(tmp_path: Path, shared: Path) -> None:
    """A checkpoint with a vision config (what `r1v-train` writes) gets the images, not captions:
    MATH-Vision samples, which have no caption, are answered instead of refused."""
    store = tmp_path / "store"
    ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    vlm = build_tiny_vlm(tmp_path / "vlm")
    result = _generate(store, "--teacher", f"hf:{vlm}", "--max-tokens", "4", "--limit", "4")
    assert (result["sent"], result["refused"]) == (4, 0)
    rows = _traces(
        store,
        "SELECT t.prompt, t.prompt_tokens, len(s.images) AS n FROM traces t JOIN samples s USING (sample_id)",
    )
    for row in rows:
        assert (
            row["prompt"].count("<image>") == row["n"] >= 1
            and "Description of the image" not in row["prompt"]
        )
    # each <image> became the model's context tokens: the prompt counts them
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(vlm)
    for row in rows:
        text_only = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        assert row["prompt_tokens"] == text_only + row["n"] * (VLM_IMAGE_TOKENS - 1)


def test_bad_where_is_refused_before_any_work(sample_store: Path) -> None:
    proc = run_cli(
        "generate",
        "--store",
        sample_store,
        "--teacher",
        "hf:/nonexistent",
        "--where",
        "nope >",
        check=False,
    )
    assert (
        proc.returncode == 1
        and "is not a valid expression over the samples" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    proc = run_cli("generate", "--store", sample_store, "--teacher", "hf:/nonexistent", check=False)
    assert proc.returncode == 1 and "cannot load hf:/nonexistent" in proc.stderr
    proc = run_cli("generate", "--store", sample_store, "--teacher", "gpt4", check=False)
    assert proc.returncode == 1 and "unknown teacher" in proc.stderr


def test_openai_teacher_against_a_local_server(sample_store: Path) -> None:
    with FakeOpenAIProcess(latency_s=0.01) as srv:
        result = _generate(sample_store, "--teacher", f"openai:{srv.url}#fake-model", "--n", "2")
    assert (result["sent"], result["refused"], result["failed"]) == (76, 0, {})
    traces = _traces(sample_store)
    assert all(t["answer"] is not None and "\\boxed" not in t["answer"] for t in traces)
    assert all(t["think_closed"] for t in traces)


def test_sigkill_then_resume_never_repeats_a_finished_request(sample_store: Path) -> None:
    """Kill generate half way; restart. One trace per request, no duplicate ids, and the server
    sees again only the requests that were in flight (the unflushed buffer is in the journal)."""
    flush = 1000  # more than the run writes: before the journal, a kill lost every result
    with FakeOpenAIProcess(latency_s=0.05) as srv:
        args = (
            "--teacher",
            f"openai:{srv.url}#fake-model",
            "--n",
            "16",
            "--set",
            f"flush_rows={flush}",
            "--set",
            "teacher_options.concurrency=4",
        )
        proc = subprocess.Popen(
            [str(BIN / "r1v-data"), "generate", "--store", str(sample_store), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        deadline = time.monotonic() + 120
        while srv.stats()["total"] < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        Store.open(sample_store, write=True).close()  # the next writer folds the journal into a part
        kept = len(_traces(sample_store))
        resumed = _generate(sample_store, *args)
        resent = srv.stats()["resent"]
    total = 38 * 16
    assert 0 < kept < total
    assert resumed["sent"] == total - kept and resumed["skipped"] == kept
    traces = _traces(sample_store)
    assert len(traces) == total and len({t["request_id"] for t in traces}) == total
    # at most the requests in flight: at the server (concurrency 4) or being graded (DEPTH)
    assert resent <= 4 + DEPTH


def test_builtin_teacher_runs_offline_and_caches_its_conversion(sample_store: Path) -> None:
    from r1v_data.backends.builtin import builtin_model_dir

    result = _generate(
        sample_store, "--teacher", "builtin", "--limit", "2", "--max-tokens", "24", "--temperature", "0"
    )
    assert (result["sent"], result["failed"], result["teacher"]) == (2, {}, "builtin")
    assert (builtin_model_dir() / "config.json").is_file()  # converted once, reused after
    for t in _traces(sample_store):
        assert t["prompt"].startswith("Question: A box holds 3 red balls")  # the one-shot format
        assert t["prompt"].endswith("Answer: <think>\n") and t["completion_tokens"] <= 24
        assert t["verdict"] in ("correct", "wrong")


def test_reviser_rewrites_wrong_traces_given_the_reference(sample_store: Path, tiny_model: Path) -> None:
    with FakeOpenAIProcess(latency_s=0.0) as srv:
        args = (
            "--teacher",
            f"hf:{tiny_model}",
            "--limit",
            "4",
            "--max-tokens",
            "6",
            "--reviser",
            f"openai:{srv.url}#judge",
        )
        result = _generate(sample_store, *args)
        again = _generate(sample_store, *args)
    revision = result["rounds"][-1]
    wrong = {
        t["sample_id"]: t["request_id"]
        for t in _traces(sample_store)
        if t["round"] == 1 and t["verdict"] == "wrong"
    }
    assert revision["revision"] == 1 and revision["sent"] == len(wrong) > 0
    revised = [t for t in _traces(sample_store) if t["round"] == 2]
    assert {t["teacher"] for t in revised} == {"openai:judge"}  # the model, not the port it was served on
    for t in revised:
        assert t["provenance"] == f"revised:{wrong[t['sample_id']]}"
        assert t["prompt_version"] == "r1v-revise/1" and "Reference answer:" in t["prompt"]
        assert t["verdict"] in ("correct", "wrong")
    assert again["sent"] == 0  # revisions resume like everything else


def test_rounds_limit_n_and_empty_selections_behave(sample_store: Path, tiny_model: Path) -> None:
    teacher = ("--teacher", f"hf:{tiny_model}", "--max-tokens", "4")
    empty = _generate(sample_store, *teacher, "--where", "false", "--rounds", "3")
    assert (empty["requests"], empty["sent"]) == (0, 0)
    first = _generate(sample_store, *teacher, "--limit", "3", "--rounds", "2")
    round1 = {t["sample_id"] for t in _traces(sample_store) if t["round"] == 1}
    assert {
        t["sample_id"] for t in _traces(sample_store) if t["round"] == 2
    } <= round1  # never beyond --limit
    assert first["rounds"][0]["requests"] == 3
    more = _generate(
        sample_store, *teacher, "--limit", "3", "--n", "2"
    )  # index 0 exists: only index 1 is new
    assert (more["sent"], more["skipped"]) == (3, 3)


def test_failed_requests_are_sent_again_on_the_next_run(sample_store: Path) -> None:
    with FakeOpenAIProcess(latency_s=0.0, faults={"*": ["500", "500"]}) as srv:
        teacher = (
            "--teacher",
            f"openai:{srv.url}#m",
            "--limit",
            "2",
            "--set",
            "teacher_options.max_retries=1",
            "--set",
            "teacher_options.backoff_base_s=0.01",
        )
        failed = _generate(sample_store, *teacher)
        assert sum(failed["failed"].values()) == 2 and failed["verdicts"] == {}
        retried = _generate(sample_store, *teacher)  # the server answers now
    assert (retried["sent"], retried["skipped"], retried["failed"]) == (2, 0, {})
    rows = _traces(sample_store)
    assert len(rows) == 4 and sum(r["error"] is None for r in rows) == 2  # the attempts stay as history


def test_refusals_are_recorded_once_and_skipped_after(sample_store: Path, tiny_model: Path) -> None:
    args = ("--teacher", f"hf:{tiny_model}", "--limit", "2", "--set", "image_policy=refuse", "--rounds", "3")
    first = _generate(sample_store, *args)
    again = _generate(sample_store, *args)
    assert (first["refused"], again["refused"], again["skipped"]) == (2, 0, 2)
    assert len(_traces(sample_store)) == 2


def _request_ids(store: Path) -> set[str]:
    return {t["request_id"] for t in _traces(store, "SELECT request_id FROM traces WHERE error IS NULL")}


def test_a_resumed_round_sends_what_an_uninterrupted_round_sends(tmp_path: Path, sample_store: Path) -> None:
    """A run stopped in round 2 after one of a problem's round-2 samples came back correct must,
    when resumed, still send that problem's other round-2 samples. n is not part of a request id,
    so round 1 with `--n 4`, then round 2 with `--n 1`, is exactly such a stop."""
    whole = tmp_path / "whole"
    ingest_json("builtin:sample", "--store", whole)
    answers = answer_key(sample_store, tmp_path / "answers.json")
    with FakeOpenAIProcess(answers=answers, solve_rate=0.3) as srv:
        teacher = ("--teacher", f"openai:{srv.url}#m")
        _generate(whole, *teacher, "--rounds", "2", "--n", "4")
        _generate(sample_store, *teacher, "--rounds", "1", "--n", "4")
        _generate(sample_store, *teacher, "--rounds", "2", "--n", "1")
        stopped = _traces(sample_store, "SELECT * FROM traces WHERE round = 2 AND verdict = 'correct'")
        resumed = _generate(sample_store, *teacher, "--rounds", "2", "--n", "4")
    assert stopped, "the test teacher solved nothing in round 2: the stop this test needs did not happen"
    assert resumed["failed"] == {}
    assert _request_ids(sample_store) == _request_ids(whole)


def test_requests_a_server_rejects_for_good_are_recorded_once_and_never_block_a_rerun(
    sample_store: Path,
) -> None:
    """Ten problems the server always refuses (400): recorded once with its message, skipped on
    later runs (which then succeed), sent again only with --retry-failed, and even then the other
    requests are not stopped by the run of identical rejections."""
    questions = [q for (q,) in Store.open(sample_store).query("SELECT DISTINCT question FROM samples")[1]]
    refused = {q: ["400:this image is not allowed"] * 50 for q in questions[:10]}
    with FakeOpenAIProcess(faults=refused) as srv:
        teacher = ("--teacher", f"openai:{srv.url}#m")
        first = _generate(sample_store, *teacher)
        again = _generate(sample_store, *teacher)
        retried = _generate(sample_store, *teacher, "--retry-failed")
    n_refused = first["failed"].get("HTTP 400", 0)  # those ten, and any question holding one of them
    assert 10 <= n_refused < 38 and first["failed"] == {"HTTP 400": n_refused} and first["sent"] == 38
    assert (again["sent"], again["skipped"], again["failed"]) == (0, 38, {})
    assert retried["sent"] == n_refused and retried["failed"] == {"HTTP 400": n_refused}
    rows = _traces(sample_store, "SELECT error, finish_reason FROM traces WHERE error IS NOT NULL")
    assert len(rows) == 2 * n_refused
    assert all(r["finish_reason"] == "rejected" and "this image is not allowed" in r["error"] for r in rows)
