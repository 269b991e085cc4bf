"""A big table read a group of its part files at a time, each group one pass over its own files.

`mix` and the report join every kept trace to its decision and its sample. In one query DuckDB's
hash tables grow with the store (20M traces ran out of a 256 MB limit); split by a hash of the
sample id, each part rescanned every trace (20 parts, 20 scans at 20M). Groups of consecutive
part files bound the joins to a group's rows and read each part once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from r1v_data.store.layout import SCHEMA_PART
from r1v_data.store.store import Store, scan_sql


def part_groups(store: Store, table: str, rows: int) -> list[list[Path]]:
    """`table`'s part files in their order, in groups of up to `rows` rows (a bigger part alone).
    Every group holds the schema part too: a group of parts written before a column was added
    still has the column (as nulls), as the whole table's view does. A table with no part file
    at all is one empty group (its view is then an empty table)."""
    files = store.parts(table)
    shared = [p for p in files if p.name == SCHEMA_PART]
    groups: list[list[Path]] = [list(shared)]
    held = 0
    for path in files:
        if path.name == SCHEMA_PART:
            continue
        n = pq.read_metadata(path).num_rows
        if len(groups[-1]) > len(shared) and held + n > rows:
            groups.append(list(shared))
            held = 0
        groups[-1].append(path)
        held += n
    return groups


def each_group(store: Store, con: duckdb.DuckDBPyConnection, table: str, rows: int) -> Iterator[list[Path]]:
    """Point the temporary view `part_{table}` at each group of `table`'s parts in turn (a query
    built on it reads that group only); yields the group's files."""
    for files in part_groups(store, table, rows):
        con.execute(f"CREATE OR REPLACE TEMP VIEW part_{table} AS {scan_sql(con, table, files)}")
        yield files
