"""`ShardWriter.add_table` ends row groups and shards after the same rows as `add` one at a
time, so the files are the same byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from r1v_data.outputs.shards import ShardWriter


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "sample_id": f"s{i // 3}", "request_id": f"r{i}",
             "messages": [{"role": "user", "content": [{"type": "text", "text": "q" * (i % 50)}]}],
             "images": [], "source": "x", "subject": None, "difficulty": i % 5} for i in range(n)]  # fmt: skip


def _written(folder: Path, rows: list[dict], sizes: list[int], tables: list[int] | None) -> list[str]:
    writer = ShardWriter(folder, "sft_row", shard_bytes=3_000, group_bytes=700)
    if tables is None:
        for row, size in zip(rows, sizes, strict=True):
            writer.add(row, size)
    else:  # the same rows as tables of these lengths
        start = 0
        for n in tables:
            writer.add_table(
                pa.Table.from_pylist(rows[start : start + n], schema=writer.schema),
                np.array(sizes[start : start + n]),
            )
            start += n
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in writer.close()] + [str(writer.rows)]


def test_tables_end_groups_and_shards_after_the_rows_single_rows_do(tmp_path: Path) -> None:
    rows = _rows(500)
    sizes = [10 + (i * 37) % 120 for i in range(500)]
    one_by_one = _written(tmp_path / "rows", rows, sizes, None)
    assert len(one_by_one) > 3  # several shards, each of several row groups
    for i, tables in enumerate(([500], [1, 499], [7] * 71 + [3], [250, 0, 250])):
        assert _written(tmp_path / f"t{i}", rows, sizes, tables) == one_by_one, tables
