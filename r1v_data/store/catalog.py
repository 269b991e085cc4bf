"""The catalog `r1v.duckdb`: the `runs` and `manifests` tables, the registry of checked parts, and
views over the parts for a user who opens the file with DuckDB.

Only the lock holder writes the catalog, and only for a moment (a reader copies what it needs and
lets go). Every run is also written as `runs/RUN_ID.json` (its record and manifest), so that the
catalog is a cache of files: if it is lost or damaged, `r1v-data doctor --repair` rebuilds it from
the run files and the parts' own metadata.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from r1v_data.errors import DamagedStoreError, StoreError, first_line
from r1v_data.store import schema
from r1v_data.store.registry import REGISTRY_DDL, part_files
from r1v_data.store.sandbox import sql_str

CATALOG = "r1v.duckdb"
RUNS = "runs"
DDL = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, command VARCHAR, status VARCHAR, r1v_version VARCHAR,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, counts JSON);
CREATE TABLE IF NOT EXISTS manifests (run_id VARCHAR PRIMARY KEY, manifest JSON);
{REGISTRY_DDL};
"""


@dataclass
class Snapshot:
    """What a reader takes from the catalog: the runs this store ran and the parts it checked."""

    root: Path
    runs: set[str] = field(default_factory=set)
    registered: dict[str, int] = field(default_factory=dict)  # TABLE/NAME -> bytes

    def knows(self, run_id: str) -> bool:
        """A run of this store: in the catalog, or on record in `runs/` (a run that began after the
        catalog was read, or while a writer held it). Files are looked at only for such runs."""
        return run_id in self.runs or (self.root / RUNS / f"{run_id}.json").is_file()


def connect_catalog(path: Path, wait_s: float = 15.0) -> duckdb.DuckDBPyConnection:
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
        except duckdb.Error as exc:
            raise _damaged_catalog(path, exc) from None


def load_into(con: duckdb.DuckDBPyConnection, root: Path) -> Snapshot:
    """Copy the catalog's runs and manifests into `con` (in memory: an attached reader would block
    the next writer for as long as it lives) and return the snapshot of runs and parts."""
    snap = Snapshot(root)
    catalog = root / CATALOG
    if not catalog.exists():
        refuse_lost_catalog(root)
        return snap
    if not _attach_read_only(con, catalog):
        return snap  # a writer held it through every retry: the run files still name the runs
    try:
        con.execute("CREATE TABLE runs AS SELECT * FROM catalog.runs")
        con.execute("CREATE TABLE manifests AS SELECT * FROM catalog.manifests")
        snap.runs |= {r[0] for r in con.sql("SELECT run_id FROM runs").fetchall()}
        snap.registered = dict(con.sql("SELECT path, bytes FROM catalog.parts").fetchall())
    except duckdb.CatalogException:
        pass  # a catalog from before its first run finished, or from r1v 0.1 (no registry)
    finally:
        con.execute("DETACH catalog")
    return snap


def prepare(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """A catalog opened for writing: paths relative to the store, every table there."""
    con.execute(f"SET file_search_path = '{sql_str(root)}'")
    con.execute(DDL)


def temporary_files(root: Path) -> list[Path]:
    """Files of writes that never finished (only the lock holder may take them for dead)."""
    folders = [root, root / RUNS, *(root / t for t in schema.STORE_TABLES)]
    return [p for f in folders if f.is_dir() for p in sorted(f.glob(".*.tmp"))]


def write_run_file(root: Path, record: dict[str, Any]) -> None:
    """`runs/RUN_ID.json`, replaced atomically."""
    folder = root / RUNS
    folder.mkdir(exist_ok=True)
    path = folder / f"{record['run_id']}.json"
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(record, default=str, indent=1))
    os.replace(tmp, path)


def read_run_files(root: Path) -> list[dict[str, Any]]:
    folder = root / RUNS
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):  # the folder is the store's own, never user text
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # doctor reports it; one unreadable record must not hide the others
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("run_id"), str)]


def refresh_views(con: duckdb.DuckDBPyConnection) -> None:
    # Persisted views use paths relative to the store so the directory can move; DuckDB resolves
    # them against file_search_path, which `r1v-data` sets and which defaults to the current
    # directory for a user running `duckdb r1v.duckdb` inside the store. They read every file of
    # a folder, unchecked: r1v itself reads only checked parts.
    for name in schema.STORE_TABLES:
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS "
            f"SELECT * FROM read_parquet('{name}/*.parquet', union_by_name = true)"
        )


def _attach_read_only(con: duckdb.DuckDBPyConnection, catalog: Path) -> bool:
    path = sql_str(catalog)
    for attempt in range(10):  # the writer holds the file only for a moment
        try:
            con.execute(f"ATTACH '{path}' AS catalog (READ_ONLY)")
            return True
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise _damaged_catalog(catalog, exc) from None
            time.sleep(0.05 * (attempt + 1))
        except duckdb.Error as exc:
            raise _damaged_catalog(catalog, exc) from None
    return False


def refuse_lost_catalog(root: Path) -> None:
    """A store with history but no catalog lost its runs table: say so instead of counting 0."""
    has_data = any(
        p.name != "part-0-schema.parquet" for t in schema.STORE_TABLES for p in part_files(root / t)
    )
    if read_run_files(root) or has_data:
        raise DamagedStoreError(
            f"{root / CATALOG}, the store's catalog, is missing; rebuild it with "
            f"`r1v-data doctor --store {root} --repair`"
        )


def _damaged_catalog(path: Path, exc: BaseException) -> DamagedStoreError:
    return DamagedStoreError(
        f"the catalog {path} cannot be read ({first_line(exc, 200)}); rebuild it with "
        f"`r1v-data doctor --store {path.parent} --repair`"
    )
