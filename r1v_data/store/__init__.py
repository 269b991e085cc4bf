"""The store: Parquet parts (the data), `r1v.duckdb` (the catalog), the schemas every part is
checked against, and the sandbox user SQL runs in. `Store` and the part writers are the public
face; stages import them from here."""

from r1v_data.store.layout import SCHEMA_PART
from r1v_data.store.parts import PartWriter, add_score, new_run_id, score_row, utcnow, write_parquet_atomic
from r1v_data.store.store import Store

__all__ = [
    "SCHEMA_PART",
    "PartWriter",
    "Store",
    "add_score",
    "new_run_id",
    "score_row",
    "utcnow",
    "write_parquet_atomic",
]
