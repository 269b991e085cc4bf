"""Parts written by workers that do not hold the store's lock (Ray actors, on any node that mounts
the store): one part per block of requests, under a name the block alone decides.

The driver holds the lock, begins the run (so the run is on record before any part names it) and
is the only one to write the catalog; a worker only adds part files. A block's part is written
atomically (`write_parquet_atomic`) under `part-RUN-bBLOCK.parquet`: when Ray runs a block again
(its actor or node died, or the result was lost after the write), the new part replaces the old
one under the same name, so a request never has two rows and a half-written part is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1v_data.store import registry, schema
from r1v_data.store.parts import write_parquet_atomic


def block_part_name(run_id: str, block: int) -> str:
    # distinct from the driver's own `part-RUN-SEQ` parts: the 'b' keeps them apart
    return f"part-{run_id}-b{block:07d}.parquet"


def write_block_part(
    root: Path, table: str, rows: list[dict[str, Any]], run_id: str, block: int
) -> Path | None:
    """Check `rows` against `table`'s schema and write them as block `block`'s part of run `run_id`."""
    checked = schema.conform(rows, table)
    if checked.num_rows == 0:
        return None
    path = Path(root) / table / block_part_name(run_id, block)
    write_parquet_atomic(registry.part_metadata(checked, path.name, run_id), path)
    return path
