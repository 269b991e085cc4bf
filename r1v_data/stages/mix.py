"""`run_mix`: the curated shards users download and train on, from a filtered store.

The latest successful filter run's decisions are the selection. Without a recipe every selected
row is written once, in each kind asked for (`sft`, `rl`, `preference`: `outputs/kinds.py`).

Each kind is sharded Parquet in the Hugging Face layout (`KIND/data/train-00000-of-000NN.parquet`)
with a README.md dataset card listing them as configs, so `load_dataset(OUT)` and
`load_dataset("parquet", data_files=...)` read them, images decoded. Beside them `report.html`
(`r1v-data report`: the funnel, lengths, scores, a gallery), unless `report` is off. `manifest.json` records the
config, the filter run and the counts.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1v_data import __version__
from r1v_data.config import DRLCConfig, MixConfig
from r1v_data.errors import ConfigError
from r1v_data.outputs.card import TraceStats, write_card
from r1v_data.outputs.columns import BATCH_BUILDERS
from r1v_data.outputs.folder import replacing, write_manifest
from r1v_data.outputs.kinds import (
    BUILDERS,
    KINDS,
    PART_KEPT,
    PART_ROWS,
    QUERIES,
    RL_PART_ROWS,
    RL_QUERY,
    RL_SIZE,
    SFT_COLUMNS,
    SFT_QUERY,
)
from r1v_data.outputs.recipe import copies, load_recipe
from r1v_data.outputs.report import MEMORY_LIMIT, MIX_MEMORY_LIMIT, REPORT_NAME, render_report, write_html
from r1v_data.outputs.shards import ShardWriter
from r1v_data.store import Store
from r1v_data.store.groups import each_group

_BATCH = 4096  # rows a batch: the Arrow builders' arrays stay a few MB (images included)
_MEMORY_LIMIT = "256MB"  # DuckDB's, for the rows of a kind (or of one part of them)


@dataclass
class MixResult:
    out: str
    filter_run: str
    rows: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    mixture: list[dict[str, Any]] = field(
        default_factory=list
    )  # with a recipe: rows and tokens per component
    seconds: float = 0.0
    report: str | None = None  # report.html in the folder, unless --no-report
    report_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_mix(cfg: MixConfig) -> MixResult:
    """Write the mix into a new folder beside `cfg.out` and swap it in when it is whole: a bad
    recipe or a crash leaves the previous mix as it was (`outputs/folder.py`)."""
    store = Store.open(cfg.store)
    latest = store.latest_run("filter")
    if latest is None:
        raise ConfigError(
            f"{store.root} has no successful filter run: run `r1v-data filter --store {store.root}` first"
        )
    with replacing(cfg.out, "mix", overwrite=cfg.overwrite, reads=[store.root]) as out:
        result = _write(store, latest, cfg, out)
    return result


def _write(store: Store, latest: tuple[str, dict[str, Any]], cfg: MixConfig, out: Path) -> MixResult:
    run, reward_version = latest[0], latest[1].get("reward")
    result = MixResult(str(cfg.out), run)
    start = time.perf_counter()
    repeat = _recipe_copies(store, run, cfg, result) if cfg.recipe and "sft" in cfg.kinds else None
    traces = TraceStats()
    for kind in cfg.kinds:
        writer = ShardWriter(out / kind / "data", KINDS[kind], shard_bytes=cfg.shard_bytes)
        params = {"run": run, "version": reward_version} if kind == "preference" else {"run": run}
        for batch in _batches(store, kind, params):
            if kind == "sft":
                traces.add_batch(batch)
            if kind in BATCH_BUILDERS:
                table, sizes = BATCH_BUILDERS[kind](batch)
                writer.add_table(*_repeated(table, sizes, repeat if kind == "sft" else None))
            else:
                for row in batch.to_pylist():
                    writer.add(*BUILDERS[kind](row))
        result.shards[kind] = len(writer.close())
        result.rows[kind] = writer.rows
    if cfg.report:
        html = _report(store, latest, cfg, result)
        result.report_bytes = write_html(out / REPORT_NAME, html)
        result.report = str(Path(cfg.out) / REPORT_NAME)
    result.seconds = time.perf_counter() - start
    write_card(
        out, store, latest[1], result, cfg, traces if "sft" in cfg.kinds else TraceStats.of(store, run)
    )
    write_manifest(out, {
        "command": "mix", "r1v_version": __version__, "config": cfg.model_dump(mode="json"),
        "store": str(store.root), "filter_run": run, "reward_version": reward_version, "counts": result.as_dict(),
    })  # fmt: skip
    return result


def _batches(store: Store, kind: str, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """The rows of a kind: SFT a group of trace parts at a time (`kinds.PART_ROWS`), RL in parts
    split by sample (`kinds.RL_PART_ROWS`), preference pairs in one query."""
    if kind not in ("sft", "rl"):
        yield from store.batches(QUERIES[kind], None, params, batch=_BATCH, memory_limit=_MEMORY_LIMIT)
        return
    con = store.connect()
    try:
        con.execute(f"SET memory_limit = '{_MEMORY_LIMIT}'")
        # the joins as written: the traces (or decisions) stream through, and DuckDB's hash tables
        # hold only the part's kept ids and samples; left to its estimates, DuckDB built them on
        # the traces, texts and all, and ran out of memory at 20M
        con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
        # one thread: the rows come in the traces' own order, the same on every run (with two,
        # a mix of the test store came out in another order now and then)
        con.execute("SET threads = 1")
        yield from (_sft_groups if kind == "sft" else _rl_parts)(store, con, params)
    finally:
        con.close()


def _sft_groups(store: Store, con: Any, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """Group after group of trace parts: the group's kept ids, then its rows."""
    for _ in each_group(store, con, "traces", PART_ROWS):
        con.execute(PART_KEPT, params)
        yield from con.sql(SFT_QUERY).to_arrow_reader(_BATCH)


def _rl_parts(store: Store, con: Any, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """Part after part of the kept samples, split by a hash of the sample id."""
    parts = max(1, math.ceil(con.sql(RL_SIZE, params=params).fetchall()[0][0] / RL_PART_ROWS))
    for part in range(parts):
        yield from con.sql(RL_QUERY, params={**params, "parts": parts, "part": part}).to_arrow_reader(_BATCH)


def _repeated(table: pa.Table, sizes: np.ndarray, repeat: Counter[str] | None) -> tuple[pa.Table, np.ndarray]:
    """Each row as many times as the recipe says, in place; a repeat is a distinct row by id
    (`ID#1`, `ID#2`, ...)."""
    if repeat is None:
        return table, sizes
    n = np.array([repeat[i] for i in table.column("id").to_pylist()], np.int64)
    rows = np.repeat(np.arange(len(table)), n)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)  # which copy of its row
    table, ids = table.take(rows), table.column("id").take(rows)
    suffix = pc.if_else(pa.array(k > 0), pc.binary_join_element_wise("#", pa.array(k.astype(str)), ""), "")
    at = table.schema.get_field_index("id")
    return table.set_column(at, "id", pc.binary_join_element_wise(ids, suffix, "")), sizes[rows]


def _report(store: Store, latest: tuple[str, dict[str, Any]], cfg: MixConfig, result: MixResult) -> str:
    """report.html under mix's own DuckDB limit, so mix's peak does not grow with the store; with
    the report's larger one if DuckDB still cannot spill enough (the report's quantiles could not,
    at 5M traces, until they were counted per length)."""
    import duckdb

    for limit in (MIX_MEMORY_LIMIT, MEMORY_LIMIT):
        try:
            return render_report(store, latest[0], latest[1], DRLCConfig(), examples=cfg.report_examples,
                                 mix=result.as_dict(), memory_limit=limit)  # fmt: skip
        except duckdb.OutOfMemoryException:
            if limit == MEMORY_LIMIT:
                raise
    raise AssertionError("unreachable")


def _recipe_copies(store: Store, run: str, cfg: MixConfig, result: MixResult) -> Counter[str]:
    """Copies per SFT row under the recipe; the realised mixture goes into the result."""
    assert cfg.recipe is not None
    recipe = load_recipe(cfg.recipe)
    con = store.connect()
    try:
        rows = con.sql(SFT_COLUMNS, params={"run": run}).to_arrow_table()
    finally:
        con.close()
    counts, result.mixture = copies(recipe, rows)
    return counts
