"""Completions made elsewhere join the store as traces: the MATH-Vision model outputs and the
R1-V eval logs, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ingest_json, run_cli

from r1v_data.store import Store


def _import(store: Path, *args: object) -> dict:
    return json.loads(run_cli("import-traces", *args, "--store", store, "--json").stdout)


def test_mathvision_outputs_import_verified_and_idempotent(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    outputs = sorted((shared / "mathv_testmini").glob("outputs_*_testmini.jsonl"))
    result = _import(store, *outputs, "--source", "testmini")
    assert (result["read"], result["imported"], result["unmatched"]) == (912, 912, 0)
    agree = result["label_agreement"]
    assert agree["agree"] / (agree["agree"] + agree["disagree"]) >= 0.96  # against the shipped labels
    con = Store.open(store).connect()
    teachers = dict(con.sql("SELECT teacher, count(*) FROM traces GROUP BY 1").fetchall())
    assert (
        teachers == {"gemini-pro-vision": 304, "internlm-xcomposer2-vl-7b": 304, "qwen-vl-max": 304}
        or sum(teachers.values()) == 912
    )
    (prov,) = con.sql("SELECT provenance FROM traces LIMIT 1").fetchall()[0]
    assert prov.startswith("imported:outputs_") and ":" in prov
    again = _import(store, *outputs, "--source", "testmini")
    assert (again["imported"], again["unchanged"]) == (0, 912)


def test_traces_for_unknown_problems_are_quarantined(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    log = shared / "traces" / "r1v_eval_logs" / "geoqa_test_qwen2vl_7b_instruct_legacy.json"
    result = _import(store, log, "--teacher", "qwen2-vl-7b")
    assert (result["read"], result["imported"], result["unmatched"]) == (754, 0, 754)
    con = Store.open(store).connect()
    assert con.sql("SELECT reason, count(*) FROM quarantine GROUP BY 1").fetchall() == [
        ("unmatched trace", 754)
    ]


def test_batch_outputs_duplicates_and_bad_rows(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    line = {
        "custom_id": "count-000",
        "response": {
            "status_code": 200,
            "body": {
                "model": "gpt-x",
                "choices": [
                    {"message": {"content": "<think>count</think> \\\\boxed{1}"}, "finish_reason": "stop"}
                ],
            },
        },
    }
    weird = {"sample_id": ["x"], "response": "text", "finish_reason": 7}
    (tmp_path / "batch.jsonl").write_text("\n".join(json.dumps(r) for r in (line, line, weird)) + "\n")
    (tmp_path / "copy.jsonl").write_text((tmp_path / "batch.jsonl").read_text())
    result = _import(store, tmp_path / "batch.jsonl", tmp_path / "copy.jsonl")
    assert (result["read"], result["imported"], result["unchanged"], result["unmatched"]) == (6, 1, 3, 2)
    con = Store.open(store).connect()
    assert con.sql("SELECT teacher, finish_reason FROM traces").fetchall() == [("gpt-x", "stop")]
    again = _import(store, tmp_path / "batch.jsonl")
    assert (again["imported"], again["unchanged"]) == (0, 2)
    assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(2,)]  # not recorded twice
    proc = run_cli(
        "import-traces", tmp_path / "batch.jsonl", "--store", store, "--source", "nosuch", check=False
    )
    assert proc.returncode == 1 and "no samples from that source" in proc.stderr
