"""Compaction: a run's small parts of one table become one larger part, so queries open few files.

Every row stays in exactly one visible part, also when the process is killed at any point:

    1. `TABLE/.compact-NAME.json` (the intent) names the target part and its sources; written
       under a temporary name and renamed, so it is whole or absent.
    2. The target `part-RUN-cNNNNN.parquet` is written atomically (`write_parquet_atomic`).
    3. The sources are deleted, then the intent.

While an intent's target exists, readers leave its sources out (`registry.part_files`), so no
row is read twice between 2 and 3. The next lock holder (`recover`, from `Store._tidy`) finishes
what a killed compaction began: with the target in place it deletes the sources left over;
without it, it drops the intent (the sources were never touched).

A compacted part keeps the run it came from (in its name and metadata), so nothing that reads a
part's run changes. The `batches` table is left alone: its writer numbers parts by their names.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data.errors import DamagedStoreError, SchemaError
from r1v_data.store import registry, schema
from r1v_data.store.layout import SCHEMA_PART
from r1v_data.store.parts import _fsync_dir, write_parquet_atomic

INTENT_PREFIX, INTENT_SUFFIX = registry.INTENT_PREFIX, registry.INTENT_SUFFIX
SMALL_BYTES = 8 << 20  # a part under this size is worth merging
TARGET_BYTES = 64 << 20  # a compacted part holds about this much (bounds the memory it takes)
SKIPPED_TABLES = frozenset({"batches"})


@dataclass
class Compacted:
    table: str
    run_id: str
    target: str
    sources: int
    rows: int


def compact_store(root: Path, tables: tuple[str, ...] | None = None, min_parts: int = 2) -> list[Compacted]:
    """Compact every table (or `tables`) where a run has at least `min_parts` small parts; the
    caller holds the store's lock."""
    done = []
    for table in tables or schema.STORE_TABLES:
        if table in SKIPPED_TABLES or not (root / table).is_dir():
            continue
        for run_id, group in _small_parts_by_run(root / table, table).items():
            if len(group) >= min_parts:
                done += [_merge(root / table, table, run_id, chunk) for chunk in _chunks(group)]
    return done


def small_part_count(root: Path, table: str) -> int:
    """How many parts of `table` are small enough to compact (whether compaction is worth it)."""
    return sum(len(g) for g in _small_parts_by_run(root / table, table).values())


def recover(root: Path) -> None:
    """Finish or undo compactions a killed process left behind (the lock holder only)."""
    for table in schema.STORE_TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        for intent in sorted(folder.glob(f"{INTENT_PREFIX}*{INTENT_SUFFIX}")):
            plan = registry.read_intent(intent)
            if plan and (folder / plan["target"]).exists():
                for name in plan["sources"]:
                    (folder / name).unlink(missing_ok=True)
            intent.unlink()


def _small_parts_by_run(folder: Path, table: str) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in registry.part_files(folder):
        if path.name == SCHEMA_PART or path.stat().st_size >= SMALL_BYTES:
            continue
        try:
            run_id = registry.read_part_info(path, table).run_id
        except DamagedStoreError:
            continue  # doctor's business, never merged into a good part
        if run_id is not None:  # parts from before r1v 0.2 name no run: left as they are
            groups[run_id].append(path)
    return groups


def _chunks(paths: list[Path]) -> list[list[Path]]:
    chunks: list[list[Path]] = [[]]
    size = 0
    for path in paths:
        if chunks[-1] and size + path.stat().st_size > TARGET_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += path.stat().st_size
    return [c for c in chunks if len(c) > 1]


def _merge(folder: Path, table: str, run_id: str, sources: list[Path]) -> Compacted:
    try:  # each part as the current schema reads it: an older part gains the newer columns
        merged = pa.concat_tables([schema.conform(pq.read_table(p), table) for p in sources])
    except SchemaError:
        return Compacted(table, run_id, "", 0, 0)  # left as they are: queries still read them
    target = folder / _target_name(folder, run_id)
    intent = _write_intent(folder, target.name, [p.name for p in sources])
    write_parquet_atomic(registry.part_metadata(merged, target.name, run_id), target)
    for path in sources:
        path.unlink()
    _fsync_dir(folder)  # the sources are gone for good before the intent that explains them goes
    intent.unlink()
    return Compacted(table, run_id, target.name, len(sources), merged.num_rows)


def _target_name(folder: Path, run_id: str) -> str:
    n = 1
    while (folder / f"part-{run_id}-c{n:05d}.parquet").exists():
        n += 1
    return f"part-{run_id}-c{n:05d}.parquet"


def _write_intent(folder: Path, target: str, sources: list[str]) -> Path:
    intent = folder / f"{INTENT_PREFIX}{target.removesuffix('.parquet')}{INTENT_SUFFIX}"
    tmp = folder / f".{intent.name}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "w") as f:
        json.dump({"target": target, "sources": sources}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, intent)
    return intent
