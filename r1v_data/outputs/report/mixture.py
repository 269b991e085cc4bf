"""The mixture: what the kept selection holds, by kind, source, subject and difficulty, in rows and
tokens. Written by mix, the rows per kind are the shards' own counts; otherwise they are counted
from the filter's selection (one SFT row per kept trace, one RL row per kept sample with an answer)."""

from __future__ import annotations

from r1v_data.outputs.report import svg
from r1v_data.outputs.report.data import Context
from r1v_data.outputs.report.page import esc, none, table

_KEPT_SAMPLES = """SELECT count(*) FROM decisions d JOIN samples s USING (sample_id)
WHERE d.run_id = $run AND d.kept AND d.request_id IS NULL AND s.answer IS NOT NULL"""
_BY = (("source", "coalesce(source, '(none)')"), ("subject", "subject"),
       ("difficulty", "coalesce('level ' || difficulty, '(no level)')"))  # fmt: skip


def mixture(ctx: Context) -> list[str]:
    if ctx.run is None:
        return [none("Nothing is selected yet: run `r1v-data filter`, then `r1v-data mix`.")]
    kinds = _kinds(ctx)
    parts = [
        svg.bars(list(kinds.items()), "rows per kind"),
        table(["kind", "rows"], list(kinds.items()), [False, True]),
    ]
    if ctx.mix and ctx.mix.get("mixture"):
        comps = [(c["component"], c["rows"], c["tokens"]) for c in ctx.mix["mixture"]]
        parts += [
            "<h3>Recipe components</h3>",
            table(["component", "rows", "tokens"], comps, [False, True, True]),
        ]
    for label, key in _BY:
        rows = ctx.rows(f"""SELECT {key}, count(*), sum(coalesce(completion_tokens, think_tokens))::BIGINT
                            FROM r_traces WHERE kept GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 40""")  # fmt: skip
        if rows:
            parts += [f"<h3>Kept traces by {esc(label)}</h3>", '<div class="row">'
                      + svg.bars([(str(r[0]), r[1]) for r in rows[:20]], f"kept traces by {label}")
                      + table([label, "traces", "tokens"], rows, [False, True, True]) + "</div>"]  # fmt: skip
    return parts


def _kinds(ctx: Context) -> dict[str, int]:
    if ctx.mix:
        return dict(ctx.mix["rows"])
    return {"sft (kept traces)": ctx.value("SELECT count(*) FROM r_traces WHERE kept"),
            "rl (kept samples with an answer)": ctx.value(_KEPT_SAMPLES, run=ctx.run)}  # fmt: skip
