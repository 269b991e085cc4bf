"""`r1v-data calibrate` through the real CLI: a teacher at fixed penalties, the table per penalty
and difficulty third, and the fitted `drlc.penalty_range`.

The teacher is the test server playing a small model under a repetition penalty (see
`servers.fake_openai.penalised`): its chains shorten as 1/r^4 and lose their form above 1.5, and
it solves the same half of the problems at every penalty that keeps its form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, answer_key, ingest_json, run_cli
from servers.fake_openai import FakeOpenAIProcess
from tiny_models import build_tiny_llama

from r1v_data.store import Store

PENALTIES = (1.0, 1.2, 1.4, 1.6)


@pytest.fixture
def scored_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    run_cli("score", "--store", store)
    return store


def test_calibrate_measures_each_penalty_and_fits_the_range_for_the_target(
    tmp_path: Path, scored_store: Path
) -> None:
    key = answer_key(scored_store, tmp_path / "answers.json")
    with FakeOpenAIProcess(answers=key, solve_rate=0.5, pad_words=100, penalty_breaks=1.5) as srv:
        args = ["calibrate", "--store", scored_store, "--teacher", f"openai:{srv.url}#small", "--sample", "9",
                "--penalties", ",".join(map(str, PENALTIES))]  # fmt: skip
        result = json.loads(run_cli(*args, "--out", tmp_path / "drlc.yaml", "--json").stdout)
        unreachable = run_cli(*args, "--shorten", "0.9").stdout
    assert (result["samples"], result["completions"], result["failed"]) == (9, 36, 0)
    cells = {(c["penalty"], c["group"]): c for c in result["cells"]}
    assert {g for _, g in cells} == {"easiest third", "middle third", "hardest third", "all"}
    assert all(cells[(p, "easiest third")]["n"] == 3 and cells[(p, "all")]["n"] == 9 for p in PENALTIES)
    tokens = [cells[(p, "all")]["tokens"] for p in PENALTIES]
    assert tokens == sorted(tokens, reverse=True) and tokens[1] < 0.6 * tokens[0]
    formed = [cells[(p, "all")]["formed"] for p in PENALTIES]
    assert formed == [1.0, 1.0, 1.0, 0.0]  # the word salad above 1.5
    accuracy = [cells[(p, "all")]["accuracy"] for p in PENALTIES]
    assert 0 < accuracy[0] < 1 and accuracy[:3] == [accuracy[0]] * 3
    # 30% fewer tokens on the easiest third: 1.2 already does it, with accuracy and form kept
    assert result["fit"]["penalty_range"] == [1.0, 1.2] and result["fit"]["met"]
    fitted = yaml.safe_load((tmp_path / "drlc.yaml").read_text())
    assert fitted["drlc"]["penalty_range"] == [1.0, 1.2]
    preview = json.loads(
        run_cli("score", "--store", scored_store, "--config", tmp_path / "drlc.yaml", "--json").stdout
    )["preview"]["penalty"]
    assert 1.0 <= preview["min"] < preview["max"] <= 1.2  # the fitted file is a --config for DRLC
    # 90% shorter is out of reach: the shortest penalty that keeps the form, and the table says so
    assert "drlc.penalty_range=[1,1.4] (target not met" in unreachable
    assert "easiest third" in unreachable and "well-formed" in unreachable
    runs = Store.open(scored_store).query("SELECT command, status FROM runs WHERE command = 'calibrate'")[1]
    assert runs == [("calibrate", "ok"), ("calibrate", "ok")]
    assert Store.open(scored_store).query("SELECT count(*) FROM traces")[1] == [(0,)]  # not training data


def test_calibrate_needs_scores_first(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    proc = run_cli("calibrate", "--store", store, "--teacher", "openai:http://127.0.0.1:9/v1#m", check=False)
    assert proc.returncode == 1 and "run `r1v-data score --store" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_text_only_teacher_is_calibrated_on_what_it_can_read(tmp_path: Path) -> None:
    """MATH-Vision's problems have images and no caption: a text-only teacher cannot read them, so
    the sample is drawn from the captioned ones (once it held them and crashed on an empty third)."""
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    ingest_json(REPO / "r1v_data" / "sample_data" / "mathv" / "testmini.jsonl", "--store", store)
    run_cli("score", "--store", store)
    model = build_tiny_llama(tmp_path / "tiny")
    result = json.loads(run_cli("calibrate", "--store", store, "--teacher", f"hf:{model}", "--sample", "6",
                                "--penalties", "1.0,1.3", "--max-tokens", "4", "--json").stdout)  # fmt: skip
    assert (result["samples"], result["completions"], result["failed"]) == (6, 12, 0)
    assert {c["group"] for c in result["cells"]} == {"easiest third", "middle third", "hardest third", "all"}
