"""The sections about traces: think-token lengths, verdicts and accuracy, and teacher usage. All
read `r_traces` (data.py), one narrow row per trace."""

from __future__ import annotations

import math
from typing import Any

from r1v_data.backends.pricing import store_cost
from r1v_data.outputs.card import percentile_of_counts
from r1v_data.outputs.report import svg
from r1v_data.outputs.report.data import Context, binned
from r1v_data.outputs.report.page import none, table

# the groupings of the length histograms: (title, the series expression over r_traces, a condition)
_LEVEL = "coalesce('level ' || difficulty, '(no level)')"
GROUPINGS = (
    ("by difficulty level", _LEVEL, ""),
    ("by DRLC penalty bucket", "PENALTY", "penalty IS NOT NULL"),  # 4 equal-width buckets, see _buckets
    ("by round", "'round ' || round", ""),
    ("correct vs wrong", "verdict", "verdict IN ('correct', 'wrong')"),
)


def _values(series: str, where: str) -> str:
    cond = f"WHERE error IS NULL{' AND ' + where if where else ''}"
    return f"SELECT {series} AS series, think_tokens AS x FROM r_traces {cond}"


def _buckets(ctx: Context) -> tuple[str, dict[str, str]]:
    """The penalty bucket of a trace as a small integer (labels are made for the 4 buckets only,
    not formatted a million times), and each bucket's label."""
    lo, hi = ctx.rows("SELECT min(penalty), max(penalty) FROM r_traces WHERE error IS NULL")[0]
    if lo is None or hi == lo:
        return "0", {"0": f"P {lo or 0:.3f}"}
    width = (hi - lo) / 4
    labels = {str(b): f"P {lo + b * width:.3f}–{lo + (b + 1) * width:.3f}" for b in range(4)}
    return f"least(3, floor((penalty - {lo!r}) / {width!r}))::INT", labels


def lengths(ctx: Context) -> list[str]:
    if not ctx.value("SELECT count(*) FROM r_traces WHERE error IS NULL"):
        return [none("No traces yet: run `r1v-data generate` or `r1v-data import-traces`.")]
    parts = [_notes(ctx)]
    bucket, labels = _buckets(ctx)
    for title, series, where in GROUPINGS:
        names = labels if series == "PENALTY" else {}
        series = bucket if series == "PENALTY" else series
        edges, counts = binned(ctx, _values(series, where), clip=0.99)
        parts.append(f"<h3>Think tokens {title}</h3>")
        if not counts:
            parts.append(none(_missing(title)))
            continue
        counts = {names.get(k, k): v for k, v in counts.items()}
        chart = svg.histogram(counts, edges, f"think tokens {title}")
        parts.append('<div class="row">' + chart + _summary(ctx, series, where, names) + "</div>")
    return parts


def _missing(title: str) -> str:
    if "penalty" in title:
        return "No penalty: the traces record none and no sample is scored (`r1v-data score`)."
    return "No traces in this grouping (no verified traces yet)."


def _summary(ctx: Context, series: str, where: str, names: dict[str, str]) -> str:
    """Traces, median, p90 and mean per series, from the counts per (series, length): DuckDB's
    median and quantile hold every value and ran out of mix's 256 MB at 5M traces."""
    import numpy as np

    found = ctx.rows(f"""SELECT series, x, count(*) FROM ({_values(series, where)})
                         GROUP BY ALL ORDER BY 1, 2 NULLS LAST""")  # fmt: skip
    per: dict[Any, list[tuple[Any, int]]] = {}
    for key, x, n in found:
        per.setdefault(key, []).append((x, n))
    rows = []
    for key, pairs in per.items():
        known = [(x, n) for x, n in pairs if x is not None]
        values, counts = np.array([x for x, _ in known]), np.array([n for _, n in known])
        stats = (
            [percentile_of_counts(values, counts, 50), percentile_of_counts(values, counts, 90),
             float((values * counts).sum()) / counts.sum()] if known else [None] * 3
        )  # fmt: skip
        rows.append((names.get(str(key), key), sum(n for _, n in pairs), *map(_as_int, stats)))
    return table(["", "traces", "median", "p90", "mean"], rows, [False, True, True, True, True])


def _as_int(v: float | None) -> int | None:
    """As DuckDB's ::INT: to the nearest, halves away from zero (lengths are never negative)."""
    return None if v is None else math.floor(v + 0.5)


def _notes(ctx: Context) -> str:
    total, estimated, truncated = ctx.rows(
        "SELECT count(*), count(*) FILTER (estimated), count(*) FILTER (truncated) FROM r_traces WHERE error IS NULL"
    )[0]
    note = (f"{total:,} traces; truncated at the token limit: {truncated:,} ({truncated / total:.1%}). "
            "Bins are of equal width up to the 99th percentile; the last one holds the tail.")  # fmt: skip
    if estimated:
        note += f" {estimated:,} traces carry no token count (imports): measured as bytes / 4."
    by_round = ctx.rows("""SELECT round, count(*), avg(truncated::INT) FROM r_traces WHERE error IS NULL
                           GROUP BY 1 ORDER BY 1""")  # fmt: skip
    return f'<p class="muted">{note}</p>' + table(
        ["round", "traces", "truncation rate"], by_round, [True, True, True]
    )


def verdicts(ctx: Context) -> list[str]:
    if not ctx.value("SELECT count(*) FROM r_traces"):
        return [none("No traces yet.")]
    parts = []
    for label, key in (("round", "'round ' || round"), ("teacher", "teacher")):
        rows = ctx.rows(f"SELECT {key}, verdict, count(*) FROM r_traces GROUP BY ALL ORDER BY 1, 2")
        grouped: dict[str, dict[str, float]] = {}
        for k, verdict, n in rows:
            grouped.setdefault(str(k), {})[verdict] = n
        parts += [f"<h3>Verdicts per {label}</h3>", svg.stacked(list(grouped.items()), f"verdicts per {label}"),
                  table([label, "verdict", "traces"], rows, [False, False, True])]  # fmt: skip
    for label, key in (("subject", "subject"), ("difficulty", _LEVEL)):
        rows = ctx.rows(f"""SELECT {key}, count(*), count(*) FILTER (verdict = 'correct'),
                                   avg((verdict = 'correct')::INT) FROM r_traces WHERE error IS NULL
                            GROUP BY 1 ORDER BY 1""")  # fmt: skip
        parts += [f"<h3>Accuracy by {label}</h3>",
                  '<div class="row">' + svg.bars([(str(r[0]), round(100 * r[3], 1)) for r in rows], f"accuracy by {label}", "%")
                  + table([label, "traces", "correct", "accuracy"], rows, [False, True, True, True]) + "</div>"]  # fmt: skip
    return parts


# ties in order of name: DuckDB's aggregation hands the groups over in any order, so a report of
# teachers with as many requests each listed them differently from run to run
_USAGE = """
SELECT teacher, count(*), count(error), sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT,
       sum(completion_tokens) FILTER (latency_s > 0) / nullif(sum(latency_s) FILTER (latency_s > 0), 0)
FROM r_traces GROUP BY 1 ORDER BY 2 DESC, 1"""


def teachers(ctx: Context) -> list[str]:
    usage = ctx.rows(_USAGE)
    if not usage:
        return [none("No requests yet: run `r1v-data generate`.")]
    spent = store_cost(ctx.con)["by_teacher"]  # what each run charged at the prices it was given
    rows = [
        (*r[:5], None if r[5] is None else round(r[5], 1), _cost(ctx, spent, r[0], r[3], r[4])) for r in usage
    ]
    parts = [svg.bars([(r[0], r[1]) for r in usage], "requests per teacher"),
             table(["teacher", "requests", "failed", "prompt tokens", "completion tokens", "tokens/s per request", "cost (USD)"],
                   rows, [False, True, True, True, True, True, True])]  # fmt: skip
    if all(r[3] is None and r[4] is None for r in usage):
        parts.append(none("No token counts recorded (imported traces): tokens, speed and cost are unknown."))
    if all(r[-1] is None for r in rows):
        parts.append(
            none("No price configured: a `prices` table in the config (or $R1V_PRICES) prices the runs "
                 "that follow; --price TEACHER=IN,OUT (USD per million tokens) prices this report.")
        )  # fmt: skip
    failures = ctx.rows("""SELECT teacher, split_part(error, ':', 1), count(*) FROM r_traces
                           WHERE error IS NOT NULL GROUP BY ALL ORDER BY 3 DESC, 1, 2""")  # fmt: skip
    parts.append("<h3>Failures by reason</h3>")
    parts.append(
        table(["teacher", "reason", "requests"], failures, [False, False, True])
        if failures
        else none("No request failed.")
    )
    return parts


def _cost(
    ctx: Context, spent: dict[str, dict[str, Any]], teacher: str, prompt: int | None, completion: int | None
) -> float | None:
    """--price's figure for the teacher's tokens, else what its runs recorded spending."""
    price = ctx.prices.get(teacher)
    if price is None:
        usd = (spent.get(teacher) or {}).get("usd")
        return None if usd is None else round(usd, 2)
    if prompt is None and completion is None:
        return None
    return round(((prompt or 0) * price[0] + (completion or 0) * price[1]) / 1e6, 2)
