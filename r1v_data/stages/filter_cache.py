"""What a `filter` run may take from an earlier one instead of recomputing it, and the keys that
say when it may.

A re-filter (another tau, another k, the same run again) reads the same traces, samples and
scores; what it would recompute from them alone is recorded in the run's manifest under a key of
everything it was computed from, and a later run with the same key reuses it:

- `traces`: whether the candidates' request ids are unique (a query over every trace), keyed by
  the traces' parts and `errors_from`;
- `rewards`: that every candidate has its cached reward (the anti-join of every trace against
  the scores), keyed by the reward's scorer and version, `errors_from`, and the traces',
  samples' and scores' parts as the run left them. Recorded only when the run left none
  unscored (no failed score; a calibrated reward model refits its levels every run);
- the sample checks (`filter._sample_checks_key`): their drops, keyed by the samples' parts, the
  checks' settings and each benchmark's `decontam.benchmark_identity`;
- `decisions`: the run's decision rows, keyed by all of the above and the whole configuration
  (`decisions_key`). The same filter run again on unchanged parts copies them under its own run
  id instead of joining every trace to its sample, its reward and its sample's drop again.

A part is named by its table, file name, size and modification time: parts are written once,
under a temporary name, and renamed into place, so any new, removed, compacted or rewritten part
changes the key. A wrong hit would be a wrong selection; a miss only costs the recomputation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data import __version__, text
from r1v_data.store import Store, utcnow

_EARLIER = """
SELECT r.run_id, m.manifest FROM runs r JOIN manifests m USING (run_id)
WHERE r.command = 'filter' AND r.status = 'ok' ORDER BY r.started_at DESC"""


def parts_state(store: Store, *tables: str) -> list[tuple[str, str, int, int]]:
    """(table, part, bytes, mtime in ns) of every part of `tables`: what a key over them holds."""
    out = []
    for table in tables:
        for p in store.parts(table):
            st = p.stat()
            out.append((table, p.name, st.st_size, st.st_mtime_ns))
    return out


def traces_key(store: Store, errors_from: str | None) -> str:
    """The key of what `filter._require_traces` finds: the traces and who the student is."""
    return text.stable_hash("traces/1", errors_from, parts_state(store, "traces"))


def rewards_key(store: Store, scorer: str, version: str, errors_from: str | None) -> str:
    """The key under which every candidate has a cached reward of `version` (see the docstring)."""
    state = parts_state(store, "traces", "samples", "scores")
    return text.stable_hash("rewards/1", __version__, scorer, version, errors_from, state)


def decisions_key(config: dict[str, Any], reward_version: str, rewards: str, checks: str | None) -> str:
    """The key of a run's decision rows: its configuration (every field, so that any change
    misses), the reward version, the rewards' key (the traces', samples' and scores' parts) and
    the sample checks' key."""
    return text.stable_hash("decisions/1", __version__, config, reward_version, rewards, checks)


def earlier_decisions(store: Store, earlier: str, rows: int, run_id: str) -> Iterator[pa.RecordBatch] | None:
    """The decision rows of `earlier` (a filter run whose decisions key is this run's) as
    `run_id`'s, read straight from the one part that run wrote; None if that part is not there
    whole (`rows` rows), and then the decisions are computed again."""
    part = store.root / "decisions" / f"part-{earlier}-00001.parquet"
    if part not in store.parts("decisions") or pq.ParquetFile(part).metadata.num_rows != rows:
        return None
    return _as_run(pq.ParquetFile(part).iter_batches(1 << 16), run_id)


def _as_run(batches: Iterator[pa.RecordBatch], run_id: str) -> Iterator[pa.RecordBatch]:
    run, created = pa.array([run_id], pa.string()), pa.array([utcnow()], pa.timestamp("us", tz="UTC"))
    for batch in batches:
        same = pa.array(np.zeros(batch.num_rows, dtype=np.int64))  # each row takes the one value
        batch = batch.set_column(batch.schema.get_field_index("run_id"), "run_id", run.take(same))
        yield batch.set_column(batch.schema.get_field_index("created_at"), "created_at", created.take(same))


@dataclass
class Earlier:
    """The manifests of the store's successful filter runs, newest first."""

    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def load(cls, store: Store) -> Earlier:
        con = store.connect()
        try:
            rows = con.sql(_EARLIER).fetchall()
        finally:
            con.close()
        return cls([(run, json.loads(m) if isinstance(m, str) else (m or {})) for run, m in rows])

    def find(self, path: tuple[str, ...], key: str | None) -> tuple[str, dict[str, Any]] | None:
        """The newest run whose manifest holds `key` at `path` (`("memo", "rewards")`), and that
        manifest; None for no key or no such run."""
        if key is None:
            return None
        for run, manifest in self.runs:
            value: Any = manifest
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if value == key:
                return run, manifest
        return None
