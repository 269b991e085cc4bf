"""The dataset card `mix` writes: README.md with the YAML front matter the Hub reads (configs,
features, license, size category) and the provenance a user needs to trust the data: the
teachers, the scorers, the filter's thresholds and counts, the mixture and the length
distribution of the kept traces, and a link to `report.html` when mix wrote one."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from r1v_data import __version__
from r1v_data.backends.pricing import store_cost
from r1v_data.outputs.kinds import KEPT_TRACES, KINDS, TRACE_COLUMNS
from r1v_data.outputs.shards import hf_features
from r1v_data.store import Store

_DESCRIPTIONS = {
    "sft": "conversational `messages` (image parts, then the question; the assistant's `<think>` trace "
    "and answer) with an `images` column, as TRL's SFTTrainer reads them",
    "rl": "a `prompt`, `images`, the reference `solution` (and `options` for choices), for GRPO",
    "preference": "`prompt`, `chosen`, `rejected` with their reward scores, for DPO/MPO",
}
_THRESHOLDS = ("reward", "calibration", "min_score", "iteration", "errors_from", "best_k",
               "max_completion_tokens", "keep_truncated", "where", "dedup", "near_duplicate_threshold",
               "image_distance", "semantic_threshold", "decontaminate", "ngram",
               "contamination_min_fraction")  # fmt: skip


_REPORT_LINK = (
    "**See the data:** [report.html](report.html) is one self-contained page (no network needed): the "
    "funnel from ingested to kept with example rejects per rule, think lengths, verdicts and accuracy, "
    "score distributions, dedup and decontamination pairs, the mixture, teacher usage, and a gallery of "
    "examples with their images. Download it and open it in any browser."
)


@dataclass
class TraceStats:
    """What the card says about the kept traces, gathered while mix streams them (no second
    query over every row: that would be mix's memory peak). Lengths are kept as counts per token
    value, so memory is bounded by the longest trace, not by the number of traces, and the
    percentiles are still exact."""

    teachers: Counter[tuple[str, str]] = field(default_factory=Counter)
    tokens: Counter[int] = field(default_factory=Counter)
    estimated: int = 0  # traces without a token count (imports), measured as characters / 4

    def add(self, row: dict[str, Any]) -> None:
        self.teachers[row["teacher"], row["verifier"]] += 1
        self.tokens[row["tokens"]] += 1
        self.estimated += row["completion_tokens"] is None

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """`add` for every row of a batch, counted by Arrow (groups in order of first appearance, as
        `add` meets them: the card lists tied teachers in that order)."""
        table = pa.Table.from_batches([batch])
        for (teacher, verifier), n in _counts(table, ["teacher", "verifier"]):
            self.teachers[teacher, verifier] += n
        for (tokens,), n in _counts(table, ["tokens"]):
            self.tokens[tokens] += n
        self.estimated += table.column("completion_tokens").null_count

    @classmethod
    def of(cls, store: Store, run: str) -> TraceStats:
        stats = cls()
        sql = f"SELECT {TRACE_COLUMNS} {KEPT_TRACES}"
        for batch in store.batches(sql, None, {"run": run}, memory_limit="256MB"):
            stats.add_batch(batch)
        return stats


def _counts(table: pa.Table, keys: list[str]) -> list[tuple[tuple[Any, ...], int]]:
    """Rows per distinct value of `keys`, in order of first appearance (one thread keeps it)."""
    counted = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    values = zip(*(counted.column(k).to_pylist() for k in keys), strict=True)
    return list(zip(values, counted.column("count_all").to_pylist(), strict=True))


def size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def write_card(out: Path, store: Store, filter_manifest: dict[str, Any], result: Any, cfg: Any,
               traces: TraceStats) -> None:  # fmt: skip
    """README.md: front matter, then the provenance sections."""
    run = result.filter_run
    kinds = [k for k in cfg.kinds if result.rows.get(k)]
    sections = [
        f"# Reasoning data made with r1v {__version__}\n\n"
        f"Curated from the store `{Path(cfg.store).name}` by filter run `{run}`.",
        _table(["kind", "rows", "shards", "contents"],
               [[k, f"{result.rows.get(k, 0):,}", result.shards.get(k, 0), _DESCRIPTIONS[k]] for k in cfg.kinds]),
        "## Teachers\n\n" + _teachers(traces),
        "## Scorers\n\n" + _scorers(store, run),
        "## Filter\n\n" + _filter(filter_manifest),
        "## Mixture\n\n" + _mixture(result.mixture),
        "## Length of the kept traces (tokens)\n\n" + _lengths(traces),
        "## Cost\n\n" + _cost(store),
    ]  # fmt: skip
    if getattr(result, "report", None):
        sections.insert(1, _REPORT_LINK)
    (out / "README.md").write_text(
        _front_matter(out, kinds, result, cfg.license) + "\n\n".join(sections) + "\n"
    )


def _front_matter(out: Path, kinds: list[str], result: Any, license: str) -> str:
    meta = {
        "license": license,
        "size_categories": [size_category(sum(result.rows.values()))],
        "task_categories": ["image-text-to-text"],
        "tags": ["reasoning", "chain-of-thought", "r1v"],
        "configs": [
            {
                "config_name": k,
                **({"default": True} if i == 0 else {}),
                "data_files": [{"split": "train", "path": f"{k}/data/train-*.parquet"}],
            }
            for i, k in enumerate(kinds)
        ],
        "dataset_info": [_info(out, k, result.rows[k]) for k in kinds],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def _info(out: Path, kind: str, rows: int) -> dict[str, Any]:
    """A config's features and sizes: bytes in Arrow (the row groups' uncompressed size) and on disk."""
    shards = sorted((out / kind / "data").glob("train-*.parquet"))
    metadata = [pq.ParquetFile(p).metadata for p in shards]
    arrow = sum(m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups))
    return {
        "config_name": kind,
        "features": hf_features(KINDS[kind])._to_yaml_list(),
        "splits": [{"name": "train", "num_bytes": arrow, "num_examples": rows}],
        "download_size": sum(p.stat().st_size for p in shards),
        "dataset_size": arrow,
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _query(store: Store, sql: str, run: str) -> list[tuple[Any, ...]]:
    con = store.connect()
    con.execute("SET memory_limit = '256MB'")  # as mix's own stream
    try:
        return con.sql(sql, params={"run": run}).fetchall()
    finally:
        con.close()


def _teachers(traces: TraceStats) -> str:
    rows = traces.teachers.most_common()
    return _table(
        ["teacher", "verifier", "kept traces"], [[f"`{t}`", f"`{v}`", f"{n:,}"] for (t, v), n in rows]
    )


def _cost(store: Store) -> str:
    """What generating every trace in the store took (kept or not), at the prices its runs had."""
    con = store.connect()
    try:
        teachers = store_cost(con)["by_teacher"]
    finally:
        con.close()
    rows = [[f"`{t}`", f"{c['prompt_tokens']:,}", f"{c['completion_tokens']:,}",
             "no price configured" if c["usd"] is None else f"${c['usd']:,.2f}"] for t, c in teachers.items()]  # fmt: skip
    return (
        _table(["teacher", "prompt tokens", "completion tokens", "cost"], rows)
        if rows
        else "No traces were generated."
    )


def _scorers(store: Store, run: str) -> str:
    rows = _query(store, """
        SELECT scorer, version, count(DISTINCT sample_id) FROM scores
        SEMI JOIN (SELECT sample_id FROM decisions WHERE run_id = $run AND kept) USING (sample_id)
        WHERE scorer <> 'phash' GROUP BY ALL ORDER BY 1, 2""", run)  # fmt: skip
    if not rows:
        return "No sample was scored."
    return _table(["scorer", "version", "kept samples scored"], [[s, f"`{v}`", f"{n:,}"] for s, v, n in rows])


def _filter(manifest: dict[str, Any]) -> str:
    config, counts = manifest.get("config", {}), manifest.get("counts", {})
    settings = [[k, f"`{config[k]}`"] for k in _THRESHOLDS if config.get(k) not in (None, [], False)]
    settings.append(["tau (reward threshold used)", counts.get("tau")])
    dropped = counts.get("dropped", {})
    tally = [
        ["samples", f"{counts.get('samples', 0):,}"],
        ["traces", f"{counts.get('traces', 0):,}"],
        ["kept traces", f"{counts.get('kept', 0):,}"],
        ["error set E(t-1) samples", f"{counts.get('error_set', 0):,}"],
        *[[f"traces dropped: {rule}", f"{n:,}"] for rule, n in dropped.items()],
        *[[f"samples dropped: {rule}", f"{n:,}"] for rule, n in counts.get("samples_dropped", {}).items()],
    ]
    return _table(["setting", "value"], settings) + "\n\n" + _table(["count", "value"], tally)


def _mixture(mixture: list[dict[str, Any]]) -> str:
    if not mixture:
        return "No recipe: every selected row once."
    return _table(
        ["component", "selected", "rows", "tokens"],
        [[c["component"], f"{c['available']:,}", f"{c['rows']:,}", f"{c['tokens']:,}"] for c in mixture],
    )


def _lengths(traces: TraceStats) -> str:
    import numpy as np

    if not traces.tokens:
        return "No kept traces."
    values = np.array(sorted(traces.tokens), dtype=np.int64)
    counts = np.array([traces.tokens[v] for v in values], dtype=np.int64)
    n = int(counts.sum())
    p10, p50, p90, p99 = (percentile_of_counts(values, counts, q) for q in (10, 50, 90, 99))
    mean = float((values * counts).sum()) / n
    summary = _table(["traces", "min", "p10", "median", "p90", "p99", "max", "mean"],
                     [[f"{n:,}", values[0], *(round(x) for x in (p10, p50, p90, p99)), values[-1],
                       round(mean, 1)]])  # fmt: skip
    buckets = np.minimum(np.floor(np.log2(np.maximum(values, 1))), 15).astype(int)
    per_bucket = np.bincount(buckets, weights=counts, minlength=16).astype(np.int64)
    histogram = _table(["tokens", "traces", ""],
                       [[f"{2**b:,}–{2 ** (b + 1) - 1:,}" if b < 15 else f"≥{2**b:,}", f"{c:,}",
                         "█" * max(1, round(30 * c / n))] for b, c in enumerate(per_bucket) if c])  # fmt: skip
    estimated = traces.estimated
    note = (
        f"\n\n{estimated:,} traces had no token count (imports): measured as characters / 4."
        if estimated
        else ""
    )
    return summary + "\n\n" + histogram + note


def percentile_of_counts(values: Any, counts: Any, q: float) -> float:
    """numpy's default (linear) percentile of the values repeated `counts` times, without
    repeating them: the two order statistics around the position, interpolated."""
    import numpy as np

    position = q / 100 * (int(counts.sum()) - 1)
    ends = np.cumsum(counts)  # the k-th value in order (from 0) is values[i], i the first with ends[i] > k
    lo, hi = (
        values[np.searchsorted(ends, k, side="right")] for k in (math.floor(position), math.ceil(position))
    )
    return float(lo + (hi - lo) * (position - math.floor(position)))
