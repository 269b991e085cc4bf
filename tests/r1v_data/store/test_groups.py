"""`store/groups.py`: a table's parts in groups of bounded rows, each read through `part_TABLE`."""

from __future__ import annotations

from pathlib import Path

import duckdb

from r1v_data.store import SCHEMA_PART, Store, utcnow
from r1v_data.store.groups import each_group, part_groups

_TRACES = """SELECT printf('r%05d', k) AS request_id, printf('s%05d', k // 10) AS sample_id, 't' AS teacher,
1 AS round, 0 AS sample_index, 'p/1' AS prompt_version, 'text' AS text, 'generated' AS provenance,
$run AS run_id, $now::TIMESTAMPTZ AS created_at FROM range($lo, $hi) r(k)"""


def _store(root: Path, sizes: list[int]) -> Path:
    with Store.open(root, write=True, create=True) as s:
        run, now, lo = s.begin_run("generate"), utcnow(), 0
        for seq, n in enumerate(sizes):
            params = {"run": run, "now": now, "lo": lo, "hi": lo + n}
            s.write_part("traces", duckdb.sql(_TRACES, params=params).to_arrow_table(), run, seq + 1)
            lo += n
        s.finish_run(run, "ok", {}, {"command": "generate"})
    return root


def test_groups_hold_up_to_the_rows_asked_for_a_bigger_part_alone(tmp_path: Path) -> None:
    store = Store.open(_store(tmp_path / "store", [30, 30, 50, 10, 90, 20]))
    rows = [[_rows(p) for p in g] for g in part_groups(store, "traces", 60)]
    assert rows == [[0, 30, 30], [0, 50, 10], [0, 90], [0, 20]]  # the schema part in each


def test_each_group_points_the_view_at_its_parts_and_covers_the_table(tmp_path: Path) -> None:
    store = Store.open(_store(tmp_path / "store", [30, 30, 50]))
    con = store.connect()
    try:
        seen = []
        for _ in each_group(store, con, "traces", 40):
            seen += [r[0] for r in con.sql("SELECT request_id FROM part_traces").fetchall()]
        assert seen == [r[0] for r in con.sql("SELECT request_id FROM traces").fetchall()]
        assert len(seen) == 110
    finally:
        con.close()


def test_a_table_without_parts_is_one_empty_group(tmp_path: Path) -> None:
    store = Store.open(_store(tmp_path / "store", []))
    assert [[p.name for p in g] for g in part_groups(store, "traces", 10)] == [[SCHEMA_PART]]


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows
