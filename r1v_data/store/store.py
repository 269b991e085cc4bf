"""The store: a directory of Parquet parts (the data) and `r1v.duckdb` (the catalog).

    STORE/
      store.json     format and schema versions (read before anything else)
      samples/ provenance/ quarantine/ scores/ traces/ decisions/   Parquet parts
      r1v.duckdb     views over the parts, plus the `runs` and `manifests` tables
      .lock          held by the one process writing to the store

Parts are immutable: written under a temporary name and renamed into place when complete, so a
reader or a crash never sees half a file. Each table folder starts with an empty part that
carries the schema, so views work before any data arrives.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data import __version__, schema
from r1v_data.errors import QueryError, StoreError, StoreLockedError

STORE_FORMAT = 1
# what a user --where over samples sees (not the image bytes)
_SAMPLE_SCALARS = (
    "sample_id, source, source_id, question, answer, answer_type, solution, subject, difficulty, caption, "
    "len(images) AS n_images, len(options) AS n_options"
)
CATALOG = "r1v.duckdb"
SCHEMA_PART = "part-0-schema.parquet"

_CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, command VARCHAR, status VARCHAR, r1v_version VARCHAR,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, counts JSON);
CREATE TABLE IF NOT EXISTS manifests (run_id VARCHAR PRIMARY KEY, manifest JSON);
"""


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
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # Dictionary encoding is wasted effort on image bytes (every value is unique) and
        # doubled the write time on MATH-Vision; keep it for the small text columns.
        dictionary = [f.name for f in table.schema if not _holds_binary(f.type)]
        pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _holds_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _holds_binary(t.value_type)
    if pa.types.is_struct(t):
        return any(_holds_binary(f.type) for f in t)
    return False


@dataclass
class Store:
    """An open store. Use `Store.open(path)` for reading, `Store.open(path, write=True)` (as a
    context manager) for writing."""

    root: Path
    _lock_fd: int | None = field(default=None, repr=False)

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, write: bool = False, create: bool = False) -> Store:
        root = Path(root).expanduser().absolute()
        if not (root / "store.json").is_file():
            _refuse_non_store(root, create)
            _initialise(root)
        _check_versions(root)
        store = cls(root)
        if write:
            store._acquire_lock()
            store._upgrade_versions()
        return store

    def close(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # a free store has an empty lock file
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- locking -------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        """An exclusive flock on STORE/.lock, held until close(). The kernel drops it when the
        process dies, so a crashed writer never blocks the next one, and two processes can
        never both take it over."""
        lock = self.root / ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = _read_lock(lock)
            who = (
                f"pid {other.get('pid')} on {other.get('host')} ({other.get('command', '?')}, "
                f"since {other.get('since')})"
                if other
                else "another process"
            )
            raise StoreLockedError(
                f"store {self.root} is being written by {who}; wait for it to finish"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utcnow().isoformat(),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._lock_fd = fd
        self._mark_interrupted_runs()

    def _require_writable(self) -> None:
        if self._lock_fd is None:
            raise StoreError("store opened read-only; open it with write=True to write")

    # ---- versions ------------------------------------------------------------------------
    def _upgrade_versions(self) -> None:
        info = _read_info(self.root)
        current = {name: schema.load(name).version for name in schema.STORE_TABLES}
        if info.get("schemas") != current:
            info["schemas"] = {**info.get("schemas", {}), **current}
            info["r1v_version"] = __version__
            _write_info(self.root, info)
        for name in schema.STORE_TABLES:
            _ensure_table_dir(self.root, name)

    # ---- writing -------------------------------------------------------------------------
    def write_part(
        self, table_name: str, rows: list[dict[str, Any]] | pa.Table, run_id: str, seq: int
    ) -> Path | None:
        """Validate rows against the table's schema and write them as one new part."""
        self._require_writable()
        table = schema.conform(rows, table_name)
        if table.num_rows == 0:
            return None
        path = self.root / table_name / f"part-{run_id}-{seq:05d}.parquet"
        write_parquet_atomic(table, path)
        return path

    def writer(self, table_name: str, run_id: str, **kw: Any) -> PartWriter:
        self._require_writable()
        return PartWriter(self, table_name, run_id, **kw)

    # ---- reading -------------------------------------------------------------------------
    def parts(self, table_name: str) -> list[Path]:
        return sorted((self.root / table_name).glob("*.parquet"))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table over the current parts and,
        when the catalog can be read, the `runs` and `manifests` tables."""
        con = duckdb.connect()
        for name in schema.STORE_TABLES:
            con.execute(f"CREATE VIEW {name} AS {_scan_sql(self.root / name)}")
        catalog = self.root / CATALOG
        if catalog.exists() and _attach_read_only(con, catalog):
            # Copy the small catalog tables and let go of the file at once: an attached reader
            # would block the next writer for as long as this connection lives.
            try:
                con.execute("CREATE TABLE runs AS SELECT * FROM catalog.runs")
                con.execute("CREATE TABLE manifests AS SELECT * FROM catalog.manifests")
            except duckdb.CatalogException:
                pass  # a catalog from before the first run finished
            finally:
                con.execute("DETACH catalog")
        return con

    def query(
        self, sql: str, limit: int | None = None, params: list[Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query over the store's tables; DuckDB errors become a one-line QueryError."""
        con = self.connect()
        try:
            rel = con.sql(sql, params=params)
            if rel is None:
                raise QueryError("the query returned no rows (only SELECT-like queries are supported)")
            if limit is not None:
                rel = rel.limit(limit)
            return rel.columns, rel.fetchall()
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()

    def stream(
        self,
        sql: str,
        ids: list[str] | None,
        params: list[Any] | dict[str, Any] | None = None,
        batch: int = 256,
        memory_limit: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Rows of `sql`, a batch at a time (memory stays bounded), where the query may join the
        temporary table `wanted(sample_id)` holding `ids` (when given). `memory_limit` caps
        DuckDB's buffers, which otherwise keep what a long scan read."""
        con = self.connect()
        try:
            if memory_limit:
                con.execute(f"SET memory_limit = '{memory_limit}'")
            if ids is not None:
                con.execute("CREATE TEMP TABLE wanted AS SELECT unnest(?::VARCHAR[]) AS sample_id", [ids])
            for part in con.sql(sql, params=params).to_arrow_reader(batch):
                yield from part.to_pylist()
        finally:
            con.close()

    def sample_ids(self, where: str | None = None, limit: int | None = None) -> list[str]:
        """Sample ids in a stable order, optionally filtered by a user SQL expression over the
        samples' scalar columns (run in a sandbox; a malformed one raises QueryError before any
        work) and limited to the first `limit`."""
        from r1v_data import sandbox

        con = self.connect()
        try:
            columns = _SAMPLE_SCALARS if where else "sample_id"
            table = con.sql(f"SELECT {columns} FROM samples ORDER BY sample_id").to_arrow_table()
        finally:
            con.close()
        if where:
            ids = sandbox.matching(
                table, where, "the samples (columns: " + ", ".join(table.column_names) + ")"
            )
        else:
            ids = table.column("sample_id").to_pylist()
        return ids[:limit] if limit else ids

    def latest_run(self, command: str) -> tuple[str, dict[str, Any]] | None:
        """The newest successful run of `command` and its manifest; None when there is none (or
        the catalog could not be read: a writer held it)."""
        con = self.connect()
        try:
            rows = con.sql(
                "SELECT r.run_id, m.manifest FROM runs r LEFT JOIN manifests m USING (run_id) "
                "WHERE r.command = ? AND r.status = 'ok' ORDER BY r.started_at DESC LIMIT 1",
                params=[command],
            ).fetchall()
        except duckdb.CatalogException:
            return None
        finally:
            con.close()
        if not rows:
            return None
        manifest = rows[0][1]
        return rows[0][0], json.loads(manifest) if isinstance(manifest, str) else (manifest or {})

    def ids(self, table_name: str, column: str) -> set[Any]:
        """The distinct values of one column (identity sets for resuming work)."""
        if table_name not in schema.STORE_TABLES or column not in schema.load(table_name).columns:
            raise StoreError(f"no column {table_name}.{column}")
        con = self.connect()
        try:
            return {r[0] for r in con.sql(f"SELECT DISTINCT {column} FROM {table_name}").fetchall()}
        finally:
            con.close()

    # ---- runs and manifests ----------------------------------------------------------------
    @contextmanager
    def catalog(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The catalog, opened read-write for a moment (only the lock holder writes it)."""
        self._require_writable()
        con = _connect_catalog(self.root / CATALOG)
        try:
            con.execute(f"SET file_search_path = '{_sql_str(self.root)}'")
            con.execute(_CATALOG_DDL)
            yield con
        finally:
            con.close()

    def begin_run(self, command: str) -> str:
        run_id = new_run_id()
        with self.catalog() as con:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, 'running', ?, ?, NULL, NULL)",
                [run_id, command, __version__, utcnow()],
            )
        return run_id

    def finish_run(self, run_id: str, status: str, counts: dict[str, Any], manifest: dict[str, Any]) -> None:
        with self.catalog() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, counts = ? WHERE run_id = ?",
                [status, utcnow(), json.dumps(counts), run_id],
            )
            con.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?)",
                [run_id, json.dumps(manifest, default=str)],
            )
            _refresh_views(con)

    def _mark_interrupted_runs(self) -> None:
        # We hold the lock, so any run still 'running' belongs to a process that died.
        with self.catalog() as con:
            con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            _refresh_views(con)


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
        self._rows.append(row)
        self._bytes += size_hint
        if (
            len(self._rows) >= self.flush_rows
            or self._bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

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


# ---- helpers -----------------------------------------------------------------------------
def _refuse_non_store(root: Path, create: bool) -> None:
    if root.exists() and not root.is_dir():
        raise StoreError(f"--store {root} is a file, not a store directory")
    if root.exists() and any(root.iterdir()):
        raise StoreError(
            f"{root} is not an r1v store (no store.json) and is not empty; choose a new or empty directory"
        )
    if not create:
        raise StoreError(f"no store at {root}; create one with: r1v-data ingest SOURCE --store {root}")


def _initialise(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in schema.STORE_TABLES:
        _ensure_table_dir(root, name)
    info = {
        "format": STORE_FORMAT,
        "r1v_version": __version__,
        "created_at": utcnow().isoformat(),
        "schemas": {name: schema.load(name).version for name in schema.STORE_TABLES},
    }
    _write_info(root, info)


def _write_info(root: Path, info: dict[str, Any]) -> None:
    tmp = root / ".store.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, root / "store.json")


def _read_info(root: Path) -> dict[str, Any]:
    try:
        info = json.loads((root / "store.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{root}/store.json is unreadable ({exc}); the store is damaged") from exc
    schemas = info.get("schemas", {}) if isinstance(info, dict) else None
    valid = (
        isinstance(schemas, dict)
        and isinstance(info.get("format", 0), int)
        and all(isinstance(v, int) for v in schemas.values())
    )
    if not valid:
        raise StoreError(f"{root}/store.json is damaged (expected format and integer schema versions)")
    return info


def _ensure_table_dir(root: Path, name: str) -> None:
    folder = root / name
    folder.mkdir(exist_ok=True)
    if not (folder / SCHEMA_PART).exists():
        write_parquet_atomic(schema.load(name).arrow.empty_table(), folder / SCHEMA_PART)


def _check_versions(root: Path) -> None:
    info = _read_info(root)
    if info.get("format", 0) > STORE_FORMAT:
        raise StoreError(
            f"store {root} has format {info['format']} (written by r1v {info.get('r1v_version')}); "
            f"this r1v ({__version__}) reads up to format {STORE_FORMAT}; upgrade r1v: pip install -U r1v"
        )
    for name, version in info.get("schemas", {}).items():
        if name in schema.STORE_TABLES:
            schema.check_readable(name, version, f"store {root}")


def _sql_str(value: object) -> str:
    return str(value).replace("'", "''")


def _scan_sql(folder: Path) -> str:
    glob = _sql_str(folder / "*.parquet")
    return f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"


def _refresh_views(con: duckdb.DuckDBPyConnection) -> None:
    # Persisted views use paths relative to the store so the directory can move; DuckDB resolves
    # them against file_search_path, which `r1v-data` sets and which defaults to the current
    # directory for a user running `duckdb r1v.duckdb` inside the store.
    for name in schema.STORE_TABLES:
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS "
            f"SELECT * FROM read_parquet('{name}/*.parquet', union_by_name = true)"
        )


def _connect_catalog(path: Path, wait_s: float = 15.0) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:  # a reader holds it for a moment, or a user's session
            if time.monotonic() > deadline:
                raise StoreError(
                    f"the catalog {path} is held open by another process ({exc}); "
                    "close other DuckDB sessions on it and run again"
                ) from None
            time.sleep(0.1)


def _attach_read_only(con: duckdb.DuckDBPyConnection, catalog: Path) -> bool:
    path = _sql_str(catalog)
    for attempt in range(10):  # the writer holds the file only for a moment
        try:
            con.execute(f"ATTACH '{path}' AS catalog (READ_ONLY)")
            return True
        except duckdb.IOException:
            time.sleep(0.05 * (attempt + 1))
    return False


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        return json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
