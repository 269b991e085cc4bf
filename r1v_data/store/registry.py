"""Which files are the parts of a table. A folder is never trusted by its listing alone: a part copied
twice, a part of another table dropped into a folder, a truncated file or one from another store
would otherwise be read as data and change every count silently.

Every part names itself in its Parquet metadata: the table it belongs to (`r1v.schema`), the file
name it was written under (`r1v.part`) and the run that wrote it (`r1v.run_id`). The catalog keeps
a registry of the parts it has checked (path and size), so a reader checks only what is new: the
parts of a running or killed writer, or a file someone put there. A part is refused, with a
one-line error naming it, when it cannot be read, belongs to another table, is a copy of another
part (its recorded name differs from its file name), or comes from a run this store never ran.
`r1v-data doctor` lists all of that and `--repair` sets it aside.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data.errors import DamagedStoreError, first_line
from r1v_data.store import schema

INTENT_PREFIX, INTENT_SUFFIX = ".compact-", ".json"  # a compaction's intent file (compact.py)
META_PART = b"r1v.part"
META_RUN = b"r1v.run_id"
REGISTRY_DDL = (
    "CREATE TABLE IF NOT EXISTS parts (path VARCHAR PRIMARY KEY, bytes BIGINT, rows BIGINT, run_id VARCHAR)"
)


@dataclass(frozen=True)
class PartInfo:
    path: str  # TABLE/NAME, relative to the store
    bytes: int
    rows: int
    run_id: str | None  # None for the schema part and for parts written before r1v 0.2


def part_metadata(table: pa.Table, name: str, run_id: str) -> pa.Table:
    """`table` with the part's own name and run in its metadata."""
    meta = {**(table.schema.metadata or {}), META_PART: name.encode(), META_RUN: run_id.encode()}
    return table.replace_schema_metadata(meta)


def part_files(folder: Path) -> list[Path]:
    """The Parquet files of a table folder, listed (never globbed: a store path may hold `*`, `?`
    or `[`), without the hidden temporary files of writes in progress, nor the parts a finished
    but not yet tidied compaction replaced (`compact.py`)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        listed = [e.name for e in entries]
    names = {n for n in listed if n.endswith(".parquet") and not n.startswith(".")}
    for intent in (n for n in listed if n.startswith(INTENT_PREFIX) and n.endswith(INTENT_SUFFIX)):
        plan = read_intent(folder / intent)
        if plan and plan["target"] in names:  # the compacted part holds these rows now
            names -= set(plan["sources"])
    return [folder / n for n in sorted(names)]


def read_intent(path: Path) -> dict[str, Any] | None:
    """A compaction's intent (its target and sources), or None if it is gone or unreadable."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and "target" in plan and "sources" in plan else None


def read_part_info(path: Path, table: str) -> PartInfo:
    """Check one file against the table whose folder holds it; DamagedStoreError says why not."""
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise _damaged(path, f"is truncated or not Parquet ({first_line(exc, 200)})") from None
    kv = meta.metadata or {}
    owner = kv.get(schema.META_NAME, b"").decode()
    if owner != table:
        raise _damaged(
            path, f"holds {owner or 'unknown'} rows, not {table} rows (copied into the wrong folder?)"
        )
    recorded = kv.get(META_PART, b"").decode()
    if recorded and recorded != path.name:
        raise _damaged(path, f"is a copy of the part {recorded} (a duplicated or renamed part)")
    run = kv.get(META_RUN, b"").decode() or None
    return PartInfo(f"{table}/{path.name}", path.stat().st_size, meta.num_rows, run)


def scan(
    root: Path, registered: dict[str, int], knows: Callable[[str], bool]
) -> tuple[dict[str, list[Path]], list[PartInfo]]:
    """Every table's parts, and those of them the registry does not hold (or holds at another
    size), each checked and required to come from a run this store `knows`."""
    tables, new = {}, []
    for table in schema.STORE_TABLES:
        tables[table] = part_files(root / table)
        for path in tables[table]:
            if registered.get(f"{table}/{path.name}") != path.stat().st_size:
                new.append(_checked(path, table, knows))
    return tables, new


def glob_literal(path: Path) -> str:
    """`path` for DuckDB's file readers, which glob: `*`, `?` and `[` match only themselves."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in str(path))


def _checked(path: Path, table: str, knows: Callable[[str], bool]) -> PartInfo:
    info = read_part_info(path, table)
    if info.run_id is not None and not knows(info.run_id):
        raise _damaged(
            path, f"comes from run {info.run_id}, which this store never ran (another store's part?)"
        )
    return info


def _damaged(path: Path, why: str) -> DamagedStoreError:
    store = path.parent.parent
    return DamagedStoreError(f"{path} {why}; see `r1v-data doctor --store {store}` (--repair sets it aside)")
