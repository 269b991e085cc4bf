"""The funnel (ingested → quarantined → scored → generated → verified → kept, with example rejects
per rule) and the dedup/decontamination pairs."""

from __future__ import annotations

from r1v_data.outputs.report import svg
from r1v_data.outputs.report.data import Context, lookup
from r1v_data.outputs.report.images import first_thumbnail
from r1v_data.outputs.report.page import esc, none, table

REJECTS_PER_RULE = 3
PAIRS_PER_RULE = 6

# a few drops per rule, picked by a hash (stable, spread over the store); their texts are looked
# up afterwards by id, so no wide column is read for the other rows
_REJECTS = """
SELECT stage, reason, sample_id, request_id FROM decisions WHERE run_id = $run AND NOT kept
QUALIFY row_number() OVER (PARTITION BY stage ORDER BY hash(coalesce(request_id, sample_id))) <= $n
ORDER BY 1, 2"""

_PAIRS = """
SELECT stage, reason, sample_id, nullif(regexp_extract(reason, 'duplicate of (\\S+)', 1), '') AS other
FROM decisions WHERE run_id = $run AND request_id IS NULL AND stage IN ('dedup', 'decontamination')
QUALIFY row_number() OVER (PARTITION BY stage ORDER BY hash(sample_id)) <= $n
ORDER BY 1, 2"""


def funnel(ctx: Context) -> list[str]:
    steps = _steps(ctx)
    parts = [svg.bars(steps, "funnel"), table(["step", "count"], steps, [False, True])]
    quarantine = ctx.rows("SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1")
    parts.append("<h3>Quarantined rows by reason</h3>")
    parts.append(
        table(["reason", "rows"], quarantine, [False, True])
        if quarantine
        else none("No row was quarantined.")
    )
    if ctx.run is None:
        return [*parts, none("The store was never filtered: run `r1v-data filter` to see what is kept.")]
    return parts + _rules(ctx)


def _steps(ctx: Context) -> list[tuple[str, float]]:
    samples, quarantined = (
        ctx.value("SELECT count(*) FROM samples"),
        ctx.value("SELECT count(*) FROM quarantine"),
    )
    steps = [("ingested rows", samples + quarantined), ("quarantined rows", quarantined), ("samples", samples),
             ("scored samples", ctx.value("SELECT count(DISTINCT sample_id) FROM r_scores"))]  # fmt: skip
    steps += [
        (f"traces, round {r}", n)
        for r, n in ctx.rows("SELECT round, count(*) FROM r_traces GROUP BY 1 ORDER BY 1")
    ]
    steps.append(
        ("verified correct traces", ctx.value("SELECT count(*) FROM r_traces WHERE verdict = 'correct'"))
    )
    if ctx.run is not None:
        steps.append(("kept traces", ctx.value("SELECT count(*) FROM r_traces WHERE kept")))
    return steps


def _rules(ctx: Context) -> list[str]:
    drops = ctx.rows(
        """SELECT stage, CASE WHEN request_id IS NULL THEN 'samples' ELSE 'traces' END, count(*) FROM decisions
           WHERE run_id = $run AND NOT kept GROUP BY ALL ORDER BY 3 DESC, 1, 2""",
        run=ctx.run,
    )
    if not drops:
        return [none("The filter dropped nothing.")]
    parts = [
        "<h3>Dropped, per filter rule</h3>",
        svg.bars([(f"{r} ({w})", n) for r, w, n in drops], "drops per rule"),
    ]
    parts.append(table(["rule", "what", "dropped"], drops, [False, False, True]))
    rejects = ctx.rows(_REJECTS, run=ctx.run, n=REJECTS_PER_RULE)
    questions = lookup(ctx, "samples", "sample_id", [r[2] for r in rejects], "question")
    texts = lookup(ctx, "traces", "request_id", [r[3] for r in rejects], "left(text, 400)")
    rows = [(stage, reason, _cut(questions.get(sid, ("",))[0]), texts.get(rid, ("(a sample-level drop)",))[0])
            for stage, reason, sid, rid in rejects]  # fmt: skip
    return [*parts, "<h3>Example rejects</h3>", table(["rule", "reason", "question", "trace excerpt"], rows)]


def _cut(text: str | None, n: int = 300) -> str:
    text = text or ""
    return text if len(text) <= n else text[:n] + " …"


def dedup(ctx: Context) -> list[str]:
    if ctx.run is None:
        return [none("The store was never filtered: dedup and decontamination run in `r1v-data filter`.")]
    config = ctx.filter_manifest.get("config", {})
    counts = ctx.rows(
        """SELECT stage, count(*) FROM decisions WHERE run_id = $run AND request_id IS NULL
           AND stage IN ('dedup', 'decontamination') GROUP BY 1 ORDER BY 1""",
        run=ctx.run,
    )
    found = dict(counts)
    rows = [("dedup", "on" if config.get("dedup", True) else "off", found.get("dedup", 0)),
            ("decontamination", ", ".join(map(str, config.get("decontaminate") or [])) or "not run",
             found.get("decontamination", 0))]  # fmt: skip
    parts = [svg.bars([(r[0], r[2]) for r in rows], "samples dropped"),
             table(["check", "setting", "samples dropped"], rows, [False, False, True])]  # fmt: skip
    if not counts:
        return [*parts, none("No duplicate or contaminated sample was found, so there are no pairs to show.")]
    pairs = ctx.rows(_PAIRS, run=ctx.run, n=PAIRS_PER_RULE)
    found = lookup(
        ctx, "samples", "sample_id", [i for p in pairs for i in p[2:]], "question, images[1].bytes"
    )
    return [*parts, "<h3>Example pairs (dropped | kept or matched)</h3>", *(_pair(p, found) for p in pairs)]


def _pair(row: tuple, found: dict[str, tuple]) -> str:
    stage, reason, sample_id, other = row
    right = _side(*found[other]) if other in found else f"<pre>{esc(reason)}</pre>"
    left = _side(*found.get(sample_id, ("", None)))
    return (f'<div class="pair"><div><span class="tag">{esc(stage)}</span>{esc(reason)}'
            f"{left}</div><div>{right}</div></div>")  # fmt: skip


def _side(question: str | None, image: bytes | None) -> str:
    thumb = first_thumbnail(image)
    img = f'<img src="{thumb}" alt="" style="max-width:160px">' if thumb else ""
    return f"{img}<pre>{esc(_cut(question, 500))}</pre>"
