"""Versioned schemas and the store's guarantees: validation, atomic parts, version refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from r1v_data.errors import SchemaError, StoreError
from r1v_data.store import SCHEMA_PART, Store, schema, score_row

NOW = datetime.now(UTC)


def _sample(**over: object) -> dict:
    row = {
        "sample_id": "a" * 32,
        "source": "t",
        "question": "q?",
        "options": [],
        "images": [],
        "run_id": "r",
        "created_at": NOW,
    }
    return {**row, **over}


def test_every_schema_loads_with_version_metadata() -> None:
    for name in (*schema.STORE_TABLES, *schema.OUTPUT_SCHEMAS):
        loaded = schema.load(name)
        assert loaded.version >= 1
        assert loaded.arrow.metadata[schema.META_NAME] == name.encode()
    required = {
        "samples": {"sample_id", "source", "question", "answer", "images", "subject", "difficulty"},
        "traces": {"request_id", "sample_id"},
        "decisions": {"sample_id", "request_id", "stage", "reason"},
        "scores": {"sample_id", "scorer", "version", "name", "value"},
    }
    for name, columns in required.items():
        assert columns <= set(schema.load(name).columns)
    image = schema.load("samples").arrow.field("images").type.value_type
    assert {f.name for f in image} >= {"bytes", "format", "width", "height", "sha256"}


@pytest.mark.parametrize(
    "row, message",
    [
        (_sample(question=None), "required column 'question'"),
        (_sample(bogus=1), "not in schema"),
        (_sample(difficulty="hard"), "do not match"),
        (_sample(images=[{"bytes": b"x"}]), "null value"),
    ],
)
def test_conform_refuses_bad_rows(row: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        schema.conform([row], "samples")


def test_conform_casts_a_table_and_fills_optional_columns() -> None:
    table = pa.table(
        {
            "sample_id": ["s"],
            "source": ["x"],
            "question": ["q"],
            "options": [[]],
            "images": pa.array([[]], pa.list_(pa.null())),
            "run_id": ["r"],
            "created_at": pa.array([NOW], pa.timestamp("us", tz="UTC")),
        }
    )
    out = schema.conform(table, "samples")
    assert out.schema.equals(schema.load("samples").arrow, check_metadata=False)
    assert out.column("answer").null_count == 1


def test_parts_are_atomic_and_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(tmp_path / "s", write=True, create=True) as store:
        run = store.begin_run("test")
        with pytest.raises(SchemaError):
            store.write_part("samples", [_sample(question=None)], run, 1)
        real = pq.ParquetWriter.write_table

        def crash_half_way(self: pq.ParquetWriter, table: pa.Table, **kw: object) -> None:
            real(self, table.slice(0, 0), **kw)  # something reached the disk ...
            raise OSError("disk full")  # ... then the write failed

        monkeypatch.setattr(pq.ParquetWriter, "write_table", crash_half_way)
        with pytest.raises(OSError, match="disk full"):
            store.write_part("samples", [_sample()], run, 2)
        monkeypatch.undo()
        assert [p.name for p in (store.root / "samples").iterdir()] == [SCHEMA_PART]
        path = store.write_part("samples", [_sample()], run, 3)
        assert path is not None and pq.read_metadata(path).metadata[schema.META_VERSION] == b"1"
        assert store.connect().sql("SELECT count(*) FROM samples").fetchall() == [(1,)]


def test_store_written_by_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s"
    Store.open(store, write=True, create=True).close()
    info = json.loads((store / "store.json").read_text())
    info["schemas"]["samples"] = 99
    (store / "store.json").write_text(json.dumps(info))
    with pytest.raises(SchemaError, match="schema v99"):
        Store.open(store)
    proc = run_cli("stats", "--store", store, check=False)
    assert proc.returncode == 1 and "upgrade r1v" in proc.stderr and "Traceback" not in proc.stderr


def test_newer_store_format_and_non_stores_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "s"
    Store.open(store, write=True, create=True).close()
    (store / "store.json").write_text(json.dumps({"format": 7, "r1v_version": "9.0"}))
    with pytest.raises(StoreError, match="format 7"):
        Store.open(store)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not an r1v store"):
        Store.open(tmp_path / "other")
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "nowhere")


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    Store.open(tmp_path / "s", write=True, create=True).close()
    with pytest.raises(StoreError, match="read-only"):
        Store.open(tmp_path / "s").write_part("samples", [_sample()], "run", 1)


def test_a_group_of_rows_is_never_split_between_parts(tmp_path: Path) -> None:
    """A sample's scores reach disk together: a kill between two parts must not leave half of them
    (a resumed score would write that half again)."""
    with Store.open(tmp_path / "s", write=True, create=True) as store:
        run = store.begin_run("test")
        with store.writer("scores", run, flush_rows=3) as writer:
            for sample in ("a", "b", "c"):
                writer.add_group([score_row(run, sample, None, "qdam", "v", n, 0.5, None) for n in "wxyzv"])
        parts = [pq.read_table(p) for p in store.parts("scores") if p.name != SCHEMA_PART]
    assert [t.num_rows for t in parts] == [5, 5, 5]
    assert all(len(set(t.column("sample_id").to_pylist())) == 1 for t in parts)
