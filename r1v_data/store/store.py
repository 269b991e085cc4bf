"""The store: a directory of Parquet parts (the data) and `r1v.duckdb` (the catalog).

    STORE/
      store.json     format and schema versions (read before anything else)
      samples/ provenance/ quarantine/ scores/ traces/ decisions/ batches/   Parquet parts
      runs/          one JSON record per run (its status and manifest)
      r1v.duckdb     the catalog: `runs`, `manifests`, the registry of checked parts
      .lock          held by the one process writing to the store

Parts are immutable: written under a temporary name and renamed into place when complete, so a
reader or a crash never sees half a file. Each table folder starts with an empty part that
carries the schema, so views work before any data arrives. Readers see only checked parts
(`registry.py`), and user SQL runs in the sandbox of `sandbox.py`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from r1v_data import __version__
from r1v_data.errors import QueryError, StoreError, StoreLockedError, first_line
from r1v_data.redact import redact, redact_value
from r1v_data.store import catalog, compact, registry, sandbox, schema
from r1v_data.store.journal import JournaledPartWriter, fold_journals
from r1v_data.store.layout import (
    check_versions,
    ensure_table_dir,
    initialise,
    read_info,
    refuse_non_store,
    write_info,
)
from r1v_data.store.parts import (
    PartWriter,
    new_run_id,
    utcnow,
    write_parquet_atomic,
    write_parquet_stream_atomic,
)

# what a user --where over samples sees (not the image bytes)
_SAMPLE_SCALARS = (
    "sample_id, source, source_id, question, answer, answer_type, solution, subject, difficulty, caption, "
    "len(images) AS n_images, len(options) AS n_options"
)


@dataclass
class Store:
    """An open store. Use `Store.open(path)` for reading, `Store.open(path, write=True)` (as a
    context manager) for writing."""

    root: Path
    _lock_fd: int | None = field(default=None, repr=False)
    _runs: set[str] = field(default_factory=set, repr=False)  # runs begun by this process

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, write: bool = False, create: bool = False, tidy: bool = True) -> Store:
        root = Path(root).expanduser().absolute()
        if "?" in str(root):  # DuckDB 2.0 derives the catalog's WAL path wrongly past a '?'
            raise StoreError(f"--store {root}: a store path may not contain '?' (DuckDB cannot keep its "
                             "catalog there); rename the folder")  # fmt: skip
        if not (root / "store.json").is_file():
            refuse_non_store(root, create)
            initialise(root)
        check_versions(root)
        store = cls(root)
        if write:
            store._acquire_lock()
            store._upgrade_versions()
            if tidy:  # doctor holds the lock without it: it repairs what tidying would refuse
                store._tidy()
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
            "command": redact(" ".join(sys.argv))[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._lock_fd = fd

    def _require_writable(self) -> None:
        if self._lock_fd is None:
            raise StoreError("store opened read-only; open it with write=True to write")

    # ---- versions ------------------------------------------------------------------------
    def _upgrade_versions(self) -> None:
        info = read_info(self.root)
        current = {name: schema.load(name).version for name in schema.STORE_TABLES}
        if info.get("schemas") != current:
            info["schemas"] = {**info.get("schemas", {}), **current}
            info["r1v_version"] = __version__
            write_info(self.root, info)
        for name in schema.STORE_TABLES:
            ensure_table_dir(self.root, name)

    # ---- writing -------------------------------------------------------------------------
    def write_part(
        self, table_name: str, rows: list[dict[str, Any]] | pa.Table, run_id: str, seq: int
    ) -> Path | None:
        """Validate rows against the table's schema and write them as one new part."""
        self._require_writable()
        if run_id not in self._runs:
            raise StoreError(f"run {run_id} was not begun by this writer: call begin_run first")
        table = schema.conform(rows, table_name)
        if table.num_rows == 0:
            return None
        path = self.root / table_name / f"part-{run_id}-{seq:05d}.parquet"
        write_parquet_atomic(registry.part_metadata(table, path.name, run_id), path)
        return path

    def write_part_stream(
        self, table_name: str, tables: Iterable[pa.Table | pa.RecordBatch], run_id: str, seq: int
    ) -> int:
        """Validate each table against the table's schema and write them all as one new part,
        holding one at a time: a crash leaves none of it. Returns the rows written."""
        self._require_writable()
        if run_id not in self._runs:
            raise StoreError(f"run {run_id} was not begun by this writer: call begin_run first")
        path = self.root / table_name / f"part-{run_id}-{seq:05d}.parquet"
        arrow = registry.part_metadata(schema.load(table_name).arrow.empty_table(), path.name, run_id).schema
        conformed = (schema.conform(pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t,
                                    table_name).replace_schema_metadata(arrow.metadata) for t in tables)  # fmt: skip
        return write_parquet_stream_atomic(arrow, conformed, path)

    def writer(self, table_name: str, run_id: str, *, journal: bool = False, **kw: Any) -> PartWriter:
        """A buffered writer of `table_name` rows; with `journal`, each row is durable once added
        (`journal.py`), not only once its buffer is flushed."""
        self._require_writable()
        return (JournaledPartWriter if journal else PartWriter)(self, table_name, run_id, **kw)

    # ---- reading -------------------------------------------------------------------------
    def parts(self, table_name: str) -> list[Path]:
        return registry.part_files(self.root / table_name)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table over the store's checked parts
        and the catalog's `runs` and `manifests` tables. A damaged part or a lost catalog raises
        DamagedStoreError naming it."""
        return self._connect()[0]

    def _connect(self) -> tuple[duckdb.DuckDBPyConnection, list[Path]]:
        """`connect()`, and the part files its views read."""
        con = duckdb.connect()
        try:
            # what outgrows a memory limit spills here, not to DuckDB's default `.tmp` in the cwd
            con.execute(f"SET temp_directory = '{sandbox.sql_str(spill_folder())}'")
            snap = catalog.load_into(con, self.root)
            tables, _ = registry.scan(self.root, snap.registered, snap.knows)
            for name, files in tables.items():
                con.execute(f"CREATE VIEW {name} AS {scan_sql(con, name, files)}")
        except BaseException:
            con.close()
            raise
        return con, [p for files in tables.values() for p in files]

    def user_query(
        self, sql: str, limit: int, timeout_s: float
    ) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        """A user's SELECT over the store, in the sandbox: read-only, no other file, no network, at
        most `limit` rows (and whether more were cut) within `timeout_s` seconds."""
        sandbox.check_statement(sql)
        with self.sandboxed() as con:
            return sandbox.fetch_limited(con, sql, limit, timeout_s)

    @contextmanager
    def sandboxed(
        self,
        tables: dict[str, pa.Table] | None = None,
        memory_limit: str = sandbox.MEMORY_LIMIT,
        ordered: bool = True,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """`connect()` plus `tables`, locked down for user SQL (`sandbox.lock_down`): it reads the
        store's parts and nothing else. What outgrows `memory_limit` spills to `spill_folder()`.
        Unless `ordered`, results come in no set order (what lets big sorts and windows stream)."""
        con, parts = self._connect()
        try:
            for name, table in (tables or {}).items():
                con.register(name, table)
            con.execute(f"SET preserve_insertion_order = {str(ordered).lower()}")
            # DuckDB checks the path as the view names it (glob-escaped) and as it opens it
            readable = [*map(str, parts), *map(registry.glob_literal, parts)]
            sandbox.lock_down(con, readable, memory_limit)
            yield con
        finally:
            con.close()

    def query(
        self,
        sql: str,
        limit: int | None = None,
        params: list[Any] | dict[str, Any] | None = None,
        memory_limit: str | None = None,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query over the store's tables; DuckDB errors become a one-line QueryError.
        `memory_limit` caps DuckDB's buffers (a big join spills past it)."""
        con = self.connect()
        try:
            if memory_limit:
                con.execute(f"SET memory_limit = '{memory_limit}'")
            rel = con.sql(sql, params=params)
            if rel is None:
                raise QueryError("the query returned no rows (only SELECT-like queries are supported)")
            if limit is not None:
                rel = rel.limit(limit)
            return rel.columns, rel.fetchall()
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None
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
        for part in self.batches(sql, ids, params, batch, memory_limit):
            yield from part.to_pylist()

    def batches(
        self,
        sql: str,
        ids: list[str] | None = None,
        params: list[Any] | dict[str, Any] | None = None,
        batch: int = 65536,
        memory_limit: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """`stream`'s rows as Arrow record batches, for work that never needs Python rows."""
        con = self.connect()
        try:
            if memory_limit:
                con.execute(f"SET memory_limit = '{memory_limit}'")
            if ids is not None:
                con.execute("CREATE TEMP TABLE wanted AS SELECT unnest(?::VARCHAR[]) AS sample_id", [ids])
            yield from con.sql(sql, params=params).to_arrow_reader(batch)
        finally:
            con.close()

    def sample_ids(self, where: str | None = None, limit: int | None = None) -> list[str]:
        """Sample ids in a stable order, optionally filtered by a user SQL expression over the
        samples' scalar columns (run in a sandbox; a malformed one raises QueryError before any
        work) and limited to the first `limit`."""
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
        con = catalog.connect_catalog(self.root / catalog.CATALOG)
        try:
            catalog.prepare(con, self.root)
            yield con
        finally:
            con.close()

    def begin_run(self, command: str) -> str:
        run_id = new_run_id()
        record = {"run_id": run_id, "command": command, "status": "running", "r1v_version": __version__,
                  "started_at": utcnow().isoformat()}  # fmt: skip
        catalog.write_run_file(self.root, record)  # first: a part's run is always on record
        with self.catalog() as con:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, 'running', ?, ?, NULL, NULL)",
                [run_id, command, __version__, utcnow()],
            )
        self._runs.add(run_id)
        return run_id

    def finish_run(self, run_id: str, status: str, counts: dict[str, Any], manifest: dict[str, Any]) -> None:
        counts, manifest = redact_value(counts), redact_value(manifest)  # no key in a stored config
        finished = utcnow()
        with self.catalog() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, counts = ? WHERE run_id = ?",
                [status, finished, json.dumps(counts), run_id],
            )
            con.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?)",
                [run_id, json.dumps(manifest, default=str)],
            )
            record = (
                con.sql("SELECT * FROM runs WHERE run_id = ?", params=[run_id]).to_arrow_table().to_pylist()
            )
            self._register_parts(con)
            catalog.refresh_views(con)
        catalog.write_run_file(self.root, {**record[0], "counts": counts, "manifest": manifest})

    def compact(self, tables: tuple[str, ...] | None = None, min_parts: int = 2) -> list[compact.Compacted]:
        """Merge each run's small parts into larger ones, atomically (`compact.py`); the catalog's
        registry then forgets the merged parts and checks the new ones."""
        self._require_writable()
        done = [c for c in compact.compact_store(self.root, tables, min_parts) if c.sources]
        if not done:
            return done  # the catalog is left alone: nothing it lists changed
        with self.catalog() as con:
            con.execute("DELETE FROM parts WHERE NOT list_contains(?, path)", [self._part_paths()])
            self._register_parts(con)
            catalog.refresh_views(con)
        return done

    def _part_paths(self) -> list[str]:
        return [f"{t}/{p.name}" for t in schema.STORE_TABLES for p in self.parts(t)]

    def _register_parts(self, con: duckdb.DuckDBPyConnection) -> None:
        """Check the parts the registry does not hold yet and add them (the lock holder only)."""
        registered = dict(con.sql("SELECT path, bytes FROM parts").fetchall())
        runs = {r[0] for r in con.sql("SELECT run_id FROM runs").fetchall()}
        _, new = registry.scan(self.root, registered, catalog.Snapshot(self.root, runs).knows)
        for info in new:
            con.execute("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?)",
                        [info.path, info.bytes, info.rows, info.run_id])  # fmt: skip

    def _tidy(self) -> None:
        """Once the lock is ours: runs still 'running' belong to a process that died; temporary
        files of its unfinished writes are removed; parts it wrote are checked and registered."""
        if not (self.root / catalog.CATALOG).exists():
            catalog.refuse_lost_catalog(self.root)  # a new catalog would forget the history
        # before anything is registered: what a killed writer acknowledged becomes its parts, and a
        # compaction cut short is finished or undone, so every row is in exactly one part
        fold_journals(self.root)
        compact.recover(self.root)
        with self.catalog() as con:
            con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            self._register_parts(con)
            catalog.refresh_views(con)
        for record in catalog.read_run_files(self.root):
            if record.get("status") == "running":
                catalog.write_run_file(self.root, {**record, "status": "interrupted"})
        for tmp in catalog.temporary_files(self.root):
            tmp.unlink(missing_ok=True)


def spill_folder() -> Path:
    """Where DuckDB spills what outgrows a memory limit: the system's temporary folder ($TMPDIR),
    shared by every r1v process (DuckDB names its files by process and removes them on close)."""
    folder = Path(tempfile.gettempdir()) / "r1v-duckdb-spill"
    folder.mkdir(exist_ok=True)
    return folder


def scan_sql(con: duckdb.DuckDBPyConnection, name: str, files: list[Path]) -> str:
    """The SELECT that reads table `name` from `files` (all its parts, or a group of them)."""
    if not files:  # even the schema part is gone: the table is empty, with its columns
        con.register(f"_empty_{name}", schema.load(name).arrow.empty_table())
        return f"SELECT * FROM _empty_{name}"
    paths = ", ".join(f"'{sandbox.sql_str(registry.glob_literal(f))}'" for f in files)
    return f"SELECT * FROM read_parquet([{paths}], union_by_name = true)"


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        return json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
