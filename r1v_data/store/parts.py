"""Part files: how rows reach disk. A `PartWriter` buffers one table's rows and hands them to the
store as a part; `write_parquet_atomic` writes a part under a temporary name and renames it into
place, so a reader or a crash never sees half a file."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from r1v_data.store.store import Store


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` so that `path` either does not exist or is complete."""
    write_parquet_stream_atomic(table.schema, [table], path)


def write_parquet_stream_atomic(schema: pa.Schema, tables: Iterable[pa.Table], path: Path) -> int:
    """Write `tables` (each of `schema`) to `path`, one row group or more each, so that `path`
    either does not exist or holds them all: memory holds one table at a time. Returns the rows."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    rows = 0
    try:
        # Dictionary encoding is wasted effort on image bytes (every value is unique) and
        # doubled the write time on MATH-Vision; keep it for the small text columns.
        dictionary = [f.name for f in schema if not _holds_binary(f.type)]
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=dictionary) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return rows


def _holds_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _holds_binary(t.value_type)
    if pa.types.is_struct(t):
        return any(_holds_binary(f.type) for f in t)
    return False


class PartWriter:
    """Buffers rows for one table and writes a part every `flush_rows` rows, `flush_bytes`
    bytes or `flush_seconds` seconds, so a crash loses at most one buffer.

    `after` names writers whose rows must reach disk before this writer's (rows here refer to
    rows there, e.g. provenance to samples): they are flushed first."""

    def __init__(
        self,
        store: Store,
        table_name: str,
        run_id: str,
        *,
        flush_rows: int = 512,
        flush_bytes: int = 64 << 20,
        flush_seconds: float = 30.0,
        after: tuple[PartWriter, ...] = (),
    ):
        self.store, self.table_name, self.run_id = store, table_name, run_id
        self.flush_rows, self.flush_bytes, self.flush_seconds = (
            flush_rows,
            flush_bytes,
            flush_seconds,
        )
        self.after = after
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self._last_flush = time.monotonic()
        self._seq = 0

    def add(self, row: dict[str, Any], size_hint: int = 0) -> None:
        self.add_group([row], size_hint)

    def add_group(self, rows: list[dict[str, Any]], size_hint: int = 0) -> None:
        """Rows that reach disk in one part, never split by a flush: a sample's scores, whose
        last row marks the sample done (split, a resumed run would write the others again)."""
        self._rows.extend(rows)
        self._bytes += size_hint
        if (
            len(self._rows) >= self.flush_rows
            or self._bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def add_table(self, table: pa.Table | pa.RecordBatch) -> None:
        """Rows already in Arrow (computed by DuckDB): one part of their own, after what is buffered."""
        self.flush()
        self._seq += 1
        rows = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        self.store.write_part(self.table_name, rows, self.run_id, self._seq)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        for writer in self.after:
            writer.flush()
        self._seq += 1
        self.store.write_part(self.table_name, self._rows, self.run_id, self._seq)
        self._rows, self._bytes = [], 0

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # Flush on errors too: what was produced before a failure is valid and worth keeping.
        self.flush()


def add_score(
    writer: PartWriter,
    sample_id: str,
    request_id: str | None,
    scorer: str,
    version: str,
    name: str,
    value: float | None,
    detail: str | None,
) -> None:
    """One row of the scores table (of a sample, or of one of its traces with `request_id`)."""
    writer.add(score_row(writer.run_id, sample_id, request_id, scorer, version, name, value, detail))


def score_row(run_id: str, sample_id: str, request_id: str | None, scorer: str, version: str, name: str,
              value: float | None, detail: str | None) -> dict[str, Any]:  # fmt: skip
    return {"sample_id": sample_id, "request_id": request_id, "scorer": scorer, "version": version,
            "name": name, "value": value, "detail": detail, "run_id": run_id, "created_at": utcnow()}  # fmt: skip
