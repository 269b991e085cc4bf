"""Problems as they come in the wild: a question only in the image, options written every which
way, several-letter answers, JSON keyed by id. Through the real `ingest` command."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ingest_json, run_cli
from PIL import Image

from r1v_data.store import Store


def _rows(store: Path, sql: str) -> list[tuple]:
    return Store.open(store).connect().sql(sql).fetchall()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_question_only_in_the_image_is_a_sample_with_a_flag(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "img" / "q.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "img" / "r.png")
    src = _write_jsonl(
        tmp_path / "vqa.jsonl",
        [
            {"question": "", "image": "img/q.png", "answer": "7"},  # the problem is printed in the image
            {"image": "img/r.png", "answer": "3"},  # no question column at all
            {"question": "   ", "answer": "4"},  # no question and no image: nothing to ask
            {"question": "How many?", "image": "img/q.png", "answer": "1"},
        ],
    )
    store = tmp_path / "s"
    result = ingest_json(src, "--store", store, "--preset", "vqa")
    assert (result["added"], result["quarantine_reasons"]) == (3, {"missing question": 1})
    flagged = _rows(store, "SELECT question, answer, json_extract(extra, '$.question_in_image') FROM samples")
    assert sorted(flagged, key=str) == sorted(
        [("", "7", "true"), ("", "3", "true"), ("How many?", "1", None)], key=str
    )
    (detail,) = _rows(store, "SELECT detail FROM quarantine")[0]
    assert "and no image" in detail
    strict = ingest_json(src, "--store", tmp_path / "strict", "--preset", "vqa", "--require-question")
    assert (strict["added"], strict["quarantine_reasons"]) == (1, {"missing question": 3})


def test_options_in_every_layout_are_stored_without_their_labels(tmp_path: Path) -> None:
    rows = [
        {"id": "semicolon", "question": "Pick one.", "options": "A. 1;B. 2;C. 3", "answer": "B"},
        {"id": "lines", "question": "Which city?", "options": "A: Paris\nB: Rome\nC: Oslo", "answer": "Rome"},
        {
            "id": "labelled",
            "question": "Which is even?",
            "options": ["(A) 3", "(B) 4", "(C) 5"],
            "answer": "(b)",
        },
        {"id": "dict", "question": "Which is prime?", "options": {"B": "9", "A": "7"}, "answer": "7"},
        {"id": "inline", "question": "Which is odd?", "options": "(A) 2 (B) 4 (C) 5", "answer": "C"},
        {"id": "plain", "question": "Which letter?", "options": ["A", "B", "C"], "answer": "C"},
        {"id": "many", "question": "Which are even?", "options": ["2", "3", "4", "6"], "answer": "A, C, D"},
        {"id": "lines2", "question": "Which are odd?", "options": ["1", "3", "4"], "answer": "A\nB"},
        {"id": "run", "question": "Which are small?", "options": ["1", "2", "90"], "answer": "AB"},
    ]
    src = _write_jsonl(tmp_path / "mc.jsonl", [{**r, "images": []} for r in rows])
    store = tmp_path / "s"
    assert ingest_json(src, "--store", store, "--preset", "native")["added"] == len(rows)
    got = {
        r[0]: r[1:]
        for r in _rows(store, "SELECT source_id, options, answer, answer_type, question FROM samples")
    }
    assert got["semicolon"][:2] == (["1", "2", "3"], "B")
    assert got["lines"][:2] == (["Paris", "Rome", "Oslo"], "B")  # the option's text became its letter
    assert got["labelled"][:2] == (["3", "4", "5"], "B")
    assert got["dict"][:2] == (["7", "9"], "A")  # in letter order
    assert got["inline"][:2] == (["2", "4", "5"], "C")
    assert got["plain"][:2] == (["A", "B", "C"], "C")
    assert got["many"][1:3] == ("A, C, D", "multiple_choice")
    assert got["lines2"][1:3] == ("A, B", "multiple_choice")
    assert got["run"][1:3] == ("A, B", "multiple_choice")
    assert got["lines"][3] == "Which city?\n\nChoices:\n(A) Paris\n(B) Rome\n(C) Oslo"  # no "(A) A: Paris"
    assert all(kind == "multiple_choice" for _, _, kind, _ in got.values())


def test_json_keyed_by_id_detects_its_preset_like_a_list(shared: Path, tmp_path: Path) -> None:
    """MathVista-style `{"id": {record}}` files, with a metadata entry beside the records."""
    rows = [
        json.loads(line) for line in (shared / "text_math" / "math500_test.jsonl").read_text().splitlines()
    ]
    rows = rows[:5]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    keyed = {r["unique_id"]: r for r in rows}
    (tmp_path / "keyed.json").write_text(json.dumps({"version": "1.0", **keyed}))
    as_list = ingest_json(tmp_path / "list.json", "--store", tmp_path / "a")
    as_keyed = ingest_json(tmp_path / "keyed.json", "--store", tmp_path / "b")
    assert as_list["sources"][0]["preset"] == as_keyed["sources"][0]["preset"] == "math500"
    assert as_list["added"] == as_keyed["added"] == 5
    assert as_keyed["quarantine_reasons"] == {"unparseable record": 1}  # the "version" entry, kept
    ids = "SELECT sample_id FROM samples ORDER BY 1"
    assert _rows(tmp_path / "a", ids) == _rows(tmp_path / "b", ids)
    proc = run_cli("ingest", tmp_path / "keyed.json", "--store", tmp_path / "b")
    assert proc.returncode == 0
