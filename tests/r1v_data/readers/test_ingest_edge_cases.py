"""Inputs found by review to break a naive ingest; each must end as data, not as a traceback."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ingest_json, run_cli, stats_json
from PIL import Image

from r1v_data.store import Store


def _png_bytes(colour: str = "red") -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"r1v-edge-{colour}-{os.getpid()}.png"
    Image.new("RGB", (8, 8), colour).save(path)
    data = path.read_bytes()
    path.unlink()
    return data


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _quarantine(store: Path) -> dict[str, str]:
    return dict(Store.open(store).connect().sql("SELECT location, reason FROM quarantine").fetchall())


def test_odd_references_and_values_are_rows_not_crashes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    (src / "img" / "a.png").write_bytes(_png_bytes())
    os.symlink(src / "img" / "loop2", src / "img" / "loop1")
    os.symlink(src / "img" / "loop1", src / "img" / "loop2")
    b64 = base64.b64encode(_png_bytes("blue")).decode()
    rows = [
        {"question": "nul", "answer": "1", "images": ["img/a.png\u0000x"]},
        {"question": "loop", "answer": "1", "images": ["img/loop1"]},
        {"question": "long", "answer": "1", "images": ["img/" + "x" * 300 + ".png"]},
        {"question": "deep", "answer": "1", "images": [], "options": "[" * 3000 + "]" * 3000},
        {"question": "base64 bytes", "answer": "1", "images": [{"bytes": b64, "path": None}]},
        {"question": "huge level", "answer": "1", "images": [], "difficulty": 99999999999},
        {"question": "dict answer", "answer": {"x": 1}, "images": []},
        {
            "question": "letter out of range",
            "answer": "D",
            "options": ["1", "2", "3"],
            "images": [],
        },
        {"question": "surrogate \ud800", "answer": "1", "images": []},
    ]
    _jsonl(src / "rows.jsonl", rows)
    store = tmp_path / "store"
    result = ingest_json(src / "rows.jsonl", "--store", store, "--preset", "native")
    assert _quarantine(store) == {
        "rows.jsonl:1": "invalid image path",
        "rows.jsonl:2": "invalid image path",
        "rows.jsonl:3": "invalid image path",
        "rows.jsonl:4": "invalid options",
        "rows.jsonl:8": "answer not among options",
        "rows.jsonl:9": "invalid utf-8",
    }
    assert result["added"] == 3
    con = Store.open(store).connect()
    got = dict(con.sql("SELECT question, answer FROM samples").fetchall())
    assert got["dict answer"] == '{"x": 1}'
    (level, extra) = con.sql(
        "SELECT difficulty, extra FROM samples WHERE question = 'huge level'"
    ).fetchall()[0]
    assert level is None and json.loads(extra)["difficulty_raw"] == 99999999999
    (fmt,) = con.sql("SELECT images[1].format FROM samples WHERE question = 'base64 bytes'").fetchall()[0]
    assert fmt == "PNG"


def test_sources_with_no_good_rows_quarantine_them_and_exit_zero(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text(
        'garbage\n{bad\n{"a": [[[[' + "[" * 100000 + "]]]]" + "]" * 100000 + "}\n"
    )
    result = ingest_json(tmp_path / "empty.jsonl", tmp_path / "bad.jsonl", "--store", tmp_path / "s")
    assert result["read"] == 3 and result["quarantine_reasons"] == {"unparseable record": 3}
    assert stats_json(tmp_path / "s")["quarantined"] == 3


def test_json_documents_bom_single_record_and_broken(tmp_path: Path) -> None:
    (tmp_path / "bom.jsonl").write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"question": "bom?", "answer": "1"}).encode()
    )
    (tmp_path / "bom.json").write_bytes(
        b"\xef\xbb\xbf" + json.dumps([{"question": "bom doc?", "answer": "1"}], indent=2).encode()
    )
    (tmp_path / "single.json").write_text(json.dumps({"question": "solo", "answer": "1", "images": []}))
    result = ingest_json(
        tmp_path / "bom.jsonl",
        tmp_path / "bom.json",
        tmp_path / "single.json",
        "--store",
        tmp_path / "s",
        "--preset",
        "native",
    )
    assert (result["added"], result["quarantined"]) == (3, 0)
    (tmp_path / "broken.json").write_text('[\n  {"question": "a", "answer": "1"},\n]\n')
    proc = run_cli("ingest", tmp_path / "broken.json", "--store", tmp_path / "s2", check=False)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr and "line 3" in proc.stderr


def test_same_file_name_in_two_folders_keeps_both_provenances(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "A" / "test.jsonl", [{"question": "shared", "answer": "1"}])
    b = _jsonl(tmp_path / "B" / "test.jsonl", [{"question": "shared", "answer": "2"}])
    store = tmp_path / "s"
    result = ingest_json(a, b, "--store", store, "--preset", "native")
    assert [s["name"] for s in result["sources"]] == ["A/test", "B/test"]
    stats = stats_json(store)
    assert (stats["samples"], stats["provenance"], stats["answer_conflicts"]) == (1, 2, 1)
    # editing the answer in place records the new answer too
    _jsonl(a, [{"question": "shared", "answer": "3"}])
    again = ingest_json(a, "--store", store, "--preset", "native")
    assert again["new_provenance"] == 1


def test_damaged_parquet_row_group_is_quarantined(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(3000)]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000, compression="none")
    meta = pq.read_metadata(path)
    column = meta.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start : start + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    result = ingest_json(path, "--store", tmp_path / "s", "--preset", "native")
    assert result["quarantine_reasons"] == {"unreadable row group": 1}
    assert result["added"] == 2000
    (location,) = _quarantine(tmp_path / "s")
    assert location == "rows.parquet:rows 1000-1999"


def test_nan_values_from_parquet_are_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "nan.parquet"
    pq.write_table(
        pa.table({"question": ["q"], "answer": [float("nan")], "difficulty": [float("nan")]}), path
    )
    ingest_json(path, "--store", tmp_path / "s", "--preset", "native")
    con = Store.open(tmp_path / "s").connect()
    assert con.sql("SELECT answer, answer_type, difficulty, extra FROM samples").fetchall() == [
        (None, None, None, None)
    ]


def test_markup_in_data_is_shown_verbatim(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "m.jsonl",
        [{"question": "q", "answer": "1", "subject": "[/red] closing [bold]x"}],
    )
    ingest_json(src, "--store", tmp_path / "s", "--preset", "native")
    assert "[/red] closing [bold]x" in run_cli("stats", "--store", tmp_path / "s").stdout


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "not empty"),
    ],
)
def test_store_must_be_a_store_or_a_new_directory(tmp_path: Path, setup, needle: str) -> None:
    target = tmp_path / "target"
    setup(target)
    proc = run_cli("ingest", "builtin:sample", "--store", target, check=False)
    assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ['{"format": 1, "schemas": {"samples": "1a"}}', "[]", "{not json"])
def test_damaged_store_json_is_a_clear_error(tmp_path: Path, content: str) -> None:
    Store.open(tmp_path / "s", write=True, create=True).close()
    (tmp_path / "s" / "store.json").write_text(content)
    proc = run_cli("stats", "--store", tmp_path / "s", check=False)
    assert proc.returncode == 1 and "damaged" in proc.stderr and "Traceback" not in proc.stderr


def test_a_fixed_row_leaves_the_open_quarantine(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "src" / "rows.jsonl", [{"question": "q", "answer": "1", "images": ["a.png"]}])
    ingest_json(src, "--store", tmp_path / "s", "--preset", "native")
    assert stats_json(tmp_path / "s")["quarantined"] == 1
    (tmp_path / "src" / "a.png").write_bytes(_png_bytes())
    ingest_json(src, "--store", tmp_path / "s", "--preset", "native")
    stats = stats_json(tmp_path / "s")
    assert (stats["samples"], stats["quarantined"], stats["quarantined_total"]) == (1, 0, 1)


def test_provenance_without_its_sample_is_repaired_on_resume(tmp_path: Path) -> None:
    """A crash between the provenance and the sample write must not lose the sample."""
    src = _jsonl(tmp_path / "rows.jsonl", [{"question": "lost?", "answer": "1"}])
    store = tmp_path / "s"
    ingest_json(src, "--store", store, "--preset", "native")
    con = Store.open(store).connect()
    prov = con.sql("SELECT * FROM provenance").to_arrow_table()
    for part in (store / "samples").glob("part-2*.parquet"):
        part.unlink()  # the state a crash between the two writes would leave
    assert stats_json(store)["samples"] == 0
    result = ingest_json(src, "--store", store, "--preset", "native")
    assert result["added"] == 1
    assert stats_json(store)["samples"] == 1 and prov.num_rows == 1
