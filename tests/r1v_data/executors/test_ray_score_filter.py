"""`score --judge` and `filter --reward judge:` under `--executor ray`: the same score rows as on
one machine, from a judge served over HTTP and asked from Ray actors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from conftest import ingest_json
from servers.fake_openai import FakeOpenAI, request_text

from r1v_data.config import FilterConfig, GenerateConfig, ScoreConfig
from r1v_data.stages.filter import run_filter
from r1v_data.stages.generate import run_generate
from r1v_data.stages.score import run_score
from r1v_data.store import Store

SCORE_FIELDS = "sample_id, request_id, scorer, version, name, value, detail"


def _judge(body: dict[str, Any]) -> str:
    text = request_text(body)
    if "Rate this solution" in text:
        return json.dumps({"reward": len(text) % 6})
    k = len(text) % 5 + 1
    return json.dumps({"image_necessity": k, "question_quality": k, "difficulty": k, "reasoning_demand": k})


def scores(store: Path) -> list[tuple]:
    con = Store.open(store).connect()
    try:
        return sorted(con.sql(f"SELECT {SCORE_FIELDS} FROM scores").fetchall(), key=repr)
    finally:
        con.close()


def test_judge_scores_and_rewards_on_ray_match_local(ray_cluster: str, tmp_path: Path) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    ingest_json("builtin:sample", "--store", local)
    with FakeOpenAI() as teacher:
        run_generate(GenerateConfig(store=local, teacher=f"openai:{teacher.url}#m"))
    shutil.copytree(local, on_ray)
    ray = {"kind": "ray", "block_size": 10}
    with FakeOpenAI(reply=_judge) as srv:
        judge = f"openai:{srv.url}#judge"
        results = {}
        for store, executor in ((local, {"kind": "local"}), (on_ray, ray)):
            scored = run_score(ScoreConfig(store=store, judge=judge, scorers=["qdam"], executor=executor))
            filtered = run_filter(FilterConfig(store=store, reward=f"judge:{judge}", min_score=3, dedup=False,
                                               executor=executor))  # fmt: skip
            results[executor["kind"]] = (scored.scored, scored.failed, scored.judge_calls, filtered.rewards,
                                         filtered.kept)  # fmt: skip
    assert results["ray"] == results["local"]
    assert results["local"][0] == {"qdam": 38} and results["local"][3] == {"scored": 38, "failed": 0}
    assert scores(on_ray) == scores(local) and len(scores(local)) == 38 * 7 + 38
    assert any("-b" in p.name for p in (on_ray / "scores").iterdir())  # written by the actors
