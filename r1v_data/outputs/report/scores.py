"""The score distributions: QDAM's S_v and S_t, VTIA's S_I, each property behind them, DRLC's
penalty and the filter's reward."""

from __future__ import annotations

from typing import Any

from r1v_data.outputs.report import svg
from r1v_data.outputs.report.data import Context, binned
from r1v_data.outputs.report.page import esc, none, table

COMBINED = ("S_v", "S_t", "S_I")
_IN = "('S_v', 'S_t', 'S_I')"

# the latest reward of every candidate trace under the filter's reward version
_REWARDS = """SELECT round(value, 2), count(*) FROM (
    SELECT arg_max(value, created_at) AS value FROM scores
    WHERE name = 'reward' AND version = $version AND request_id IS NOT NULL GROUP BY request_id
) GROUP BY 1 ORDER BY 1"""


def scores(ctx: Context, drlc: Any) -> list[str]:
    parts: list[str] = []
    if not ctx.value("SELECT count(*) FROM r_scores"):
        parts.append(
            none(
                "No sample is scored: run `r1v-data score` (QDAM, VTIA) to see S_v, S_t, S_I and DRLC's penalty."
            )
        )
    else:
        parts += _group(ctx, "S_v, S_t, S_I", f"name IN {_IN}")
        parts += _group(ctx, "the QDAM/VTIA properties", f"name NOT IN {_IN}")
        parts += _penalty(ctx, drlc)
    return parts + _rewards(ctx)


def _group(ctx: Context, title: str, where: str) -> list[str]:
    edges, counts = binned(ctx, f"SELECT name AS series, value AS x FROM r_scores WHERE {where}")
    if not counts:
        return []
    rows = ctx.rows(f"""SELECT name, count(*), min(value), median(value), avg(value), max(value)
                        FROM r_scores WHERE {where} GROUP BY 1 ORDER BY 1""")  # fmt: skip
    chart = svg.histogram(counts, edges, title)
    return [f"<h3>{esc(title)}</h3>", '<div class="row">' + chart +
            table(["score", "samples", "min", "median", "mean", "max"], rows, [False] + [True] * 5) + "</div>"]  # fmt: skip


def _penalty(ctx: Context, drlc: Any) -> list[str]:
    edges, counts = binned(ctx, "SELECT 'P' AS series, penalty AS x FROM r_penalty")
    rows = ctx.rows("SELECT count(*), min(penalty), median(penalty), max(penalty) FROM r_penalty")
    note = (f"P = min(2, {drlc.floor:g}·exp({drlc.slope:.4g}·(1 − (Ŝv + {drlc.beta:g}·Ŝt + {drlc.gamma:g}·ŜI)"
            f" / (1 + {drlc.beta:g} + {drlc.gamma:g})))), scores min-max normalised over the store: the penalty "
            "`generate --adaptive-length` sets with this configuration.")  # fmt: skip
    chart = svg.histogram(counts, edges, "DRLC penalty")
    return ["<h3>DRLC repetition penalty</h3>", f'<p class="muted">{esc(note)}</p>',
            '<div class="row">' + chart + table(["samples", "min", "median", "max"], rows, [True] * 4) + "</div>"]  # fmt: skip


def _rewards(ctx: Context) -> list[str]:
    version = ctx.filter_manifest.get("reward")
    rows = ctx.rows(_REWARDS, version=version) if version else []
    if not rows:
        return ["<h3>Reward</h3>", none("No rewards: `r1v-data filter` scores every candidate trace.")]
    return [f"<h3>Reward ({esc(version)}), per candidate trace</h3>",
            '<div class="row">' + svg.bars([(f"reward {v:g}", n) for v, n in rows], "reward")
            + table(["reward", "traces"], rows, [True, True]) + "</div>"]  # fmt: skip
