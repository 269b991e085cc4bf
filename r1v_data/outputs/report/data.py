"""What the report's sections read: one DuckDB connection over the store with three narrow
tables built once (a row per trace, as Parquet files the sections stream; the latest score per
sample and DRLC's penalty per sample, temporary tables), and the helpers that aggregate them. Everything is counted, binned and sampled in
DuckDB; Python only ever holds the aggregates and the few examples shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from r1v_data.outputs.card import percentile_of_counts
from r1v_data.store import Store
from r1v_data.store.groups import each_group
from r1v_data.store.sandbox import sql_str

# the latest value of every per-sample QDAM/VTIA score (a re-score wins)
SAMPLE_SCORES = """
CREATE TEMP TABLE r_scores AS
SELECT sample_id, name, arg_max(value, created_at) AS value FROM scores
WHERE request_id IS NULL AND scorer IN ('qdam', 'vtia') AND value IS NOT NULL GROUP BY ALL"""

# DRLC's penalty per scored sample (alcotd/drlc.py in SQL): min-max over the store, a missing or
# constant score counted as neutral (0.5)
PENALTIES = """
CREATE TEMP TABLE r_penalty AS
WITH n AS (
    SELECT sample_id, name, (value - min(value) OVER w) / nullif(max(value) OVER w - min(value) OVER w, 0) AS v
    FROM r_scores WHERE name IN ('S_v', 'S_t', 'S_I') WINDOW w AS (PARTITION BY name)
), p AS (
    SELECT sample_id, coalesce(max(v) FILTER (name = 'S_v'), 0.5) AS sv,
           coalesce(max(v) FILTER (name = 'S_t'), 0.5) AS st, coalesce(max(v) FILTER (name = 'S_I'), 0.5) AS si
    FROM n GROUP BY sample_id
)
SELECT sample_id,
       least(2, $floor * exp($slope * (1 - (sv + $beta * st + $gamma * si) / (1 + $beta + $gamma)))) AS penalty
FROM p"""

# one narrow row per trace, written a group of trace parts at a time (`store/groups.py`) to a
# Parquet file of its own, each group's decisions found first: in one query the joins' hash tables
# held every trace's decision and sample, and 20M traces ran out of mix's 256MB; as one temporary
# table, the rows already written stayed in DuckDB's memory as far as its limit let them (256MB
# from ~2M traces on: mix's peak grew with the store), and under 128MB an INSERT ran out at 20M.
# The files are streamed by each section's scan, so the report's working set is a group's. The
# ids are kept as their 64-bit hashes (the gallery looks its few ids up): as text they were most
# of a row. Think tokens: the completion's tokens in the
# share of its characters the think takes; imported traces have no token count and are measured
# as bytes / 4.
# traces a group: its decisions (ids and all) are a hash table, and its samples another
GROUP_ROWS = 500_000
GROUP_DECISIONS = """
CREATE OR REPLACE TEMP TABLE r_group_decisions AS
SELECT request_id, kept, stage FROM decisions
WHERE run_id = $run AND request_id IS NOT NULL AND request_id IN (SELECT request_id FROM part_traces)"""
GROUP_TRACES = """
SELECT hash(t.request_id) AS request_hash, hash(t.sample_id) AS sample_hash, t.teacher, t.round, coalesce(t.verdict, '(none)') AS verdict,
       t.error, coalesce(t.truncated, false) AS truncated, t.prompt_tokens, t.completion_tokens, t.latency_s,
       CASE WHEN t.completion_tokens IS NOT NULL AND strlen(t.text) > 0
            THEN round(t.completion_tokens * strlen(coalesce(t.think, t.text)) / strlen(t.text))::BIGINT
            ELSE (strlen(coalesce(t.think, t.text, '')) // 4)::BIGINT END AS think_tokens,
       t.completion_tokens IS NULL AS estimated,
       coalesce(t.sampling.repetition_penalty, p.penalty) AS penalty,
       coalesce(s.subject, '(none)') AS subject, s.difficulty, s.source,
       coalesce(d.kept, false) AS kept, d.stage
FROM part_traces t
JOIN (SELECT sample_id, subject, difficulty, source FROM samples
      WHERE sample_id IN (SELECT sample_id FROM part_traces)) s USING (sample_id)
LEFT JOIN (SELECT * FROM r_penalty WHERE sample_id IN (SELECT sample_id FROM part_traces)) p USING (sample_id)
LEFT JOIN r_group_decisions d USING (request_id)"""


@dataclass
class Context:
    """The connection with the temporary tables, and what the sections need to know."""

    con: duckdb.DuckDBPyConnection
    run: str | None  # the filter run reported on (None: the store was never filtered)
    filter_manifest: dict[str, Any] = field(default_factory=dict)
    examples: int = 24
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    mix: dict[str, Any] | None = None  # mix's result, when the report is written by mix

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.con.sql(sql, params=params or None).fetchall()

    def value(self, sql: str, **params: Any) -> Any:
        return self.rows(sql, **params)[0][0]


def prepare(store: Store, con: duckdb.DuckDBPyConnection, run: str | None, drlc: Any, folder: Path) -> None:
    """Build the temporary tables (one pass over traces, into Parquet files under `folder`; scores
    read once)."""
    con.execute(SAMPLE_SCORES)
    con.execute(PENALTIES, {"floor": drlc.floor, "slope": drlc.slope, "beta": drlc.beta, "gamma": drlc.gamma})
    # the joins as written: a group's traces stream through, its samples, penalties and decisions
    # are the hash tables (left to its estimates, DuckDB may build on the traces, texts and all)
    con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
    files = []
    for i, _ in enumerate(each_group(store, con, "traces", GROUP_ROWS)):
        con.execute(GROUP_DECISIONS, {"run": run})
        files.append(sql_str(str(folder / f"r_traces-{i:05d}.parquet")))
        con.execute(f"COPY ({GROUP_TRACES}) TO '{files[-1]}' (FORMAT parquet)")
    con.execute("DROP TABLE r_group_decisions")
    listed = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE TEMP VIEW r_traces AS SELECT * FROM read_parquet([{listed}])")
    con.execute("RESET disabled_optimizers")


def binned(ctx: Context, values_sql: str, bins: int = 20, clip: float | None = None, **params: Any) -> tuple[
    list[float], dict[str, list[int]]
]:  # fmt: skip
    """Equal-width bins over `values_sql` (columns: series, x): the edges, and the counts per series.
    With `clip` (a quantile), the top bin also holds everything above it (long tails)."""
    if clip:
        lo, hi = _clipped_range(ctx, values_sql, clip, **params)
    else:
        lo, hi = ctx.rows(f"SELECT min(x), max(x) FROM ({values_sql}) WHERE x IS NOT NULL", **params)[0]
    if lo is None:
        return [], {}
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = ctx.rows(
        f"""SELECT series, least({bins - 1}, greatest(0, floor((x - $lo) / $width)))::INT AS b, count(*)
            FROM ({values_sql}) WHERE x IS NOT NULL GROUP BY ALL ORDER BY 1, 2""",
        lo=lo, width=width, **params,
    )  # fmt: skip
    series: dict[str, list[int]] = {}
    for name, b, n in counts:
        series.setdefault(str(name), [0] * bins)[b] = n
    return [lo + i * width for i in range(bins + 1)], series


def _clipped_range(ctx: Context, values_sql: str, clip: float, **params: Any) -> tuple[Any, Any]:
    """The least value and the `clip` quantile (as DuckDB's quantile_cont), from the counts per
    value: DuckDB's quantile holds every value, and 20M traces' lengths ran out of mix's 256 MB."""
    import numpy as np

    found = ctx.rows(
        f"SELECT x, count(*) FROM ({values_sql}) WHERE x IS NOT NULL GROUP BY x ORDER BY x", **params
    )
    if not found:
        return None, None
    values, counts = np.array([x for x, _ in found]), np.array([n for _, n in found])
    return found[0][0], percentile_of_counts(values, counts, 100 * clip)


def lookup(ctx: Context, table: str, key: str, ids: list[str], columns: str) -> dict[str, tuple[Any, ...]]:
    """`columns` of the few rows of `table` whose `key` is in `ids`: the ids go in as constants
    so DuckDB filters the Parquet scan on them before it reads the wide columns (texts, images)."""
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    found = ctx.con.sql(f"SELECT {key}, {columns} FROM {table} WHERE {key} IN ({marks})", params=wanted)
    return {row[0]: row[1:] for row in found.fetchall()}
