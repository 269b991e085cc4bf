"""AL-CoTD end to end: `r1v-data score` (local estimators and a judge over HTTP), the DRLC
penalty over MATH-Vision levels, and `generate --adaptive-length`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ingest_json, run_cli
from servers.fake_openai import FakeOpenAI, FakeOpenAIProcess, request_text

from r1v_data.alcotd.estimators import cues, estimate, integration, question_quality
from r1v_data.config import DEFAULT_PENALTY_RANGE
from r1v_data.grading.judge import integer_fields, json_object
from r1v_data.store import Store


def _score(store: Path, *args: object) -> dict[str, Any]:
    return json.loads(run_cli("score", "--store", store, *args, "--json").stdout)


def _rows(store: Path, sql: str) -> list[dict[str, Any]]:
    con = Store.open(store).connect()
    try:
        return con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()


@pytest.fixture
def sample_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    return store


def test_local_scores_on_mathvision_give_hard_problems_lower_penalties(tmp_path: Path, shared: Path) -> None:
    store = tmp_path / "mv"
    ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    first = _score(store)
    assert first["scored"] == {"qdam": 304, "vtia": 304} and first["judge_calls"] == 0
    preview = first["preview"]
    p = preview["penalty"]
    low, high = DEFAULT_PENALTY_RANGE  # spread over the default range
    assert low <= p["min"] < low + 0.25 * (high - low) and high - 0.25 * (high - low) < p["max"] <= high
    by_level = {row["level"]: row for row in preview["by_level"]}
    assert set(by_level) == {1, 2, 3, 4, 5}

    def mean_over(levels: tuple[int, ...]) -> float:
        rows = [by_level[lv] for lv in levels]
        return sum(r["mean_penalty"] * r["n"] for r in rows) / sum(r["n"] for r in rows)

    assert mean_over((4, 5)) < mean_over((1, 2)) - 0.05 * (high - low)  # hard problems: longer chains
    assert first["agreement"]["local_vs_levels"]["difficulty"]["rho"] > 0.2
    names = {r["name"] for r in _rows(store, "SELECT DISTINCT name FROM scores")}
    assert names == {"image_clarity", "image_necessity", "question_quality", "difficulty",
                     "reasoning_demand", "integration", "S_v", "S_t", "S_I"}  # fmt: skip
    again = _score(store)  # cached by (sample, scorer, version)
    assert again["scored"] == {} and again["cached"] == {"qdam": 304, "vtia": 304}
    table = run_cli("score", "--store", store).stdout  # the human summary prints the level table
    assert re.search(r"level.*samples.*mean penalty", table) and "spearman local vs levels" in table


TWO_IMAGES = "How many shapes are there in the two images together"  # its QDAM reply is never valid
SQUARES = "How many squares are there"  # its first QDAM reply is out of range, the repair is fine


def _judge_reply(body: dict[str, Any]) -> str:
    """A judge stand-in: valid JSON except for the planted cases."""
    text = request_text(body)
    repair = "could not be used" in text
    if '"integration": N' in text:
        return '{"integration": 4}'
    if TWO_IMAGES in text:
        return "I think it is quite hard." if repair else "Sure! {'difficulty': 3}"
    if SQUARES in text and not repair:
        return '```json\n{"image_necessity": 5, "question_quality": 4, "difficulty": 9, "reasoning_demand": 2}\n```'
    level = 1 + len(text) % 5
    return json.dumps(
        {"image_necessity": 5, "question_quality": 4, "difficulty": level, "reasoning_demand": 2}
    )


def test_judge_scores_retry_once_record_failures_and_are_cached(sample_store: Path) -> None:
    questions = [r["question"] for r in _rows(sample_store, "SELECT question FROM samples")]
    n, two, squares = (
        len(questions),
        sum(TWO_IMAGES in q for q in questions),
        sum(SQUARES in q for q in questions),
    )
    assert n == 38 and two >= 1 and squares >= 1
    _score(sample_store)  # local estimators first: the judged run then reports their agreement
    with FakeOpenAI(reply=_judge_reply) as srv:
        spec = f"openai:{srv.url}#judge-model"
        first = _score(sample_store, "--judge", spec)
        calls = len(srv.received)
        second = _score(sample_store, "--judge", spec)
        second_calls = len(srv.received) - calls
    assert first["failed"] == {"qdam": two}  # never valid: recorded, no score made up
    assert first["scored"] == {"qdam": n - two, "vtia": n}
    assert calls == first["judge_calls"] == 2 * n + two + squares  # exactly one retry per invalid reply
    assert second["cached"] == {"qdam": n - two, "vtia": n}
    assert second_calls == 2 * two  # only the failures are asked again (and retried once)
    failed = _rows(
        sample_store, "SELECT value, detail FROM scores WHERE name = 'difficulty' AND value IS NULL"
    )
    assert len(failed) == 2 * two and all("invalid twice" in f["detail"] for f in failed)
    repaired = _rows(
        sample_store,
        "SELECT s.value FROM scores s JOIN samples USING (sample_id) "
        f"WHERE s.name = 'difficulty' AND question LIKE '%{SQUARES}%'",
    )
    assert repaired and all(0.0 <= r["value"] <= 1.0 for r in repaired)  # the repaired reply, not the 9
    judged = _rows(
        sample_store,
        "SELECT version, value FROM scores WHERE name = 'integration' AND version LIKE '%judge:%'",
    )
    assert {r["value"] for r in judged} == {0.75}  # 4 on 1-5 is 0.75
    assert all("judge:openai:judge-model" in r["version"] for r in judged)
    agreement = first["agreement"]["local_vs_judge"]
    assert agreement["difficulty"]["n"] == n - two and -1.0 <= agreement["difficulty"]["rho"] <= 1.0


def test_adaptive_length_sets_each_samples_penalty_and_budget(sample_store: Path) -> None:
    with FakeOpenAIProcess(latency_s=0.0) as srv:
        teacher = f"openai:{srv.url}#teacher"
        refused = run_cli(
            "generate", "--store", sample_store, "--teacher", teacher, "--adaptive-length", check=False
        )
        assert refused.returncode == 1 and "r1v-data score" in refused.stderr
        assert not _rows(sample_store, "SELECT * FROM traces")  # refused before any work
        _score(sample_store)
        args = (
            "--teacher",
            teacher,
            "--adaptive-length",
            "--set",
            "drlc.max_tokens_range=[64,512]",
            "--json",
        )
        result = json.loads(run_cli("generate", "--store", sample_store, *args).stdout)
        rerun = json.loads(run_cli("generate", "--store", sample_store, *args).stdout)
    assert result["sent"] == 38 and rerun["sent"] == 0 and rerun["skipped"] == 38  # resumable as ever
    with FakeOpenAIProcess(latency_s=0.0) as srv:  # a smaller selection keeps each sample's penalty
        args = ("--teacher", f"openai:{srv.url}#teacher", *args[2:])
        subset = json.loads(run_cli("generate", "--store", sample_store, *args, "--limit", "5").stdout)
    assert (subset["sent"], subset["skipped"]) == (0, 5)
    traces = _rows(sample_store, "SELECT sampling FROM traces")
    penalties = [t["sampling"]["repetition_penalty"] for t in traces]
    budgets = [t["sampling"]["max_tokens"] for t in traces]
    assert min(penalties) >= 1.0 and max(penalties) <= 2.0 and len(set(penalties)) > 5
    assert min(budgets) >= 64 and max(budgets) <= 512 and len(set(budgets)) > 5
    # the budget and the penalty come from the same score: the longest budget has the lowest penalty
    ordered = sorted(zip(budgets, penalties, strict=True))
    assert ordered[0][1] == max(penalties) and ordered[-1][1] == min(penalties)
    assert result["adaptive"]["penalty_min"] == min(penalties)


def test_the_penalty_range_is_given_directly_or_by_the_papers_alpha(sample_store: Path) -> None:
    """`drlc.penalty_range: [PMIN, PMAX]`: the hardest sample gets PMIN, the easiest PMAX (alpha =
    ln(PMAX / PMIN)); `drlc.alpha` alone is the paper's formula, from 1 up to min(2, e^alpha)."""
    ranged = _score(sample_store, "--set", "drlc.penalty_range=[1.05,1.4]")["preview"]["penalty"]
    paper = _score(sample_store, "--set", "drlc.alpha=0.6931")["preview"]["penalty"]
    assert 1.05 <= ranged["min"] < ranged["max"] <= 1.4 and 1.0 <= paper["min"] < paper["max"] <= 2.0
    for end in ("min", "max"):  # both place a sample at the same point of their range: 1 - score
        assert math.log(ranged[end] / 1.05) / math.log(1.4 / 1.05) == pytest.approx(
            math.log(paper[end]) / 0.6931, abs=2e-3
        )
    both = run_cli("score", "--store", sample_store, "--set", "drlc.alpha=0.5", "--set",
                   "drlc.penalty_range=[1,1.2]", check=False)  # fmt: skip
    assert both.returncode == 1 and "give penalty_range or alpha, not both" in both.stderr
    upside_down = run_cli(
        "score", "--store", sample_store, "--set", "drlc.penalty_range=[1.3,1.1]", check=False
    )
    assert upside_down.returncode == 1 and "1 <= PMIN <= PMAX <= 2" in upside_down.stderr


def test_judge_json_parsing_is_strict_about_values_and_lenient_about_wrapping() -> None:
    parse = integer_fields(("a", "b"), 1, 5)
    assert parse('{"a": 1, "b": 5, "why": "x"}') == {"a": 1.0, "b": 5.0}
    assert parse('Here you go:\n```json\n{"a": 2, "b": 3.0}\n```') == {"a": 2.0, "b": 3.0}
    for bad, why in (
        ('{"a": 1}', "missing key"),
        ('{"a": 1, "b": 6}', "between 1 and 5"),
        ('{"a": 1, "b": 2.5}', "integer"),
        ('{"a": true, "b": 2}', "integer"),
        ('{"a": 1, "b": 2', "invalid JSON"),
        ("no json here", "no JSON object"),
    ):
        with pytest.raises(ValueError, match=why):
            parse(bad)
    assert json_object('{"nested": {"x": [1, 2]}} trailing words') == {"nested": {"x": [1, 2]}}


def test_estimators_follow_the_papers_cues() -> None:
    lookup = cues("What color is the cube?")
    deep = cues(
        "Why is the red cube left of the sphere, and how many cylinders are between the cube and the "
        "sphere if each cylinder touches the large ball?"
    )
    assert integration(deep, 1) > integration(lookup, 1) + 0.2
    assert integration(deep, 0) == 0.0
    assert question_quality(cues("cube")) < question_quality(lookup)
    easy = estimate({"question": "How many apples are there?", "images": [{}]})
    hard = estimate({"question": r"In triangle $ABC$, $AB = AC$ and $\angle BAD = 30^\circ$. If $AE = AD$, "
                     r"find the size of angle $CDE$ given that $D$ lies on $BC$.", "images": [{}]})  # fmt: skip
    assert (
        hard["difficulty"][0] > easy["difficulty"][0]
        and hard["reasoning_demand"][0] > easy["reasoning_demand"][0]
    )
    assert estimate({"question": "What is 2+2?", "images": []})["image_necessity"][0] == 0.0
