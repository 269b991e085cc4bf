"""The gallery: N examples, one trace per sample (its kept trace when it has one), with thumbnails
of its images (up to IMAGES), the question, the trace with its think folded and its answer shown, the verdict and
the scores. Examples are picked in DuckDB by a hash (stable, spread over the store); only their
texts and images are read. The page filters them by verdict and subject."""

from __future__ import annotations

from typing import Any

from r1v_data.outputs.report.data import Context, lookup
from r1v_data.outputs.report.images import first_thumbnail
from r1v_data.outputs.report.page import esc, none

MAX_EXAMPLES = 200
IMAGES = 3  # per example, at most
THINK_CHARS = 4000  # of a think shown; the rest is cut (the page stays small at any N)
ANSWER_CHARS = 600

# r_traces holds the ids' hashes (data.py), which order the pick as the ids' own hash did
_PICK = """
WITH chosen AS (SELECT sample_hash FROM r_traces WHERE error IS NULL GROUP BY 1 ORDER BY 1 LIMIT $n)
SELECT request_hash, sample_hash, verdict, subject, difficulty, kept, think_tokens
FROM r_traces WHERE error IS NULL AND sample_hash IN (SELECT sample_hash FROM chosen)
QUALIFY row_number() OVER (PARTITION BY sample_hash ORDER BY kept DESC, request_hash) = 1
ORDER BY sample_hash"""


def gallery(ctx: Context) -> list[str]:
    n = min(ctx.examples, MAX_EXAMPLES)
    picked = _with_ids(ctx, ctx.rows(_PICK, n=n)) if n > 0 else []
    if not picked:
        return [
            none(
                "No examples: the store has no traces yet." if n else "No examples asked for (--examples 0)."
            )
        ]
    ids = [r[1] for r in picked]
    samples = lookup(
        ctx,
        "samples",
        "sample_id",
        ids,
        f"question, answer, list_transform(images[1:{IMAGES}], lambda i: i.bytes)",
    )
    traces = lookup(ctx, "traces", "request_id", [r[0] for r in picked],
                    f"left(coalesce(think, text), {THINK_CHARS + 1}), left(answer, {ANSWER_CHARS}), teacher, think IS NULL")  # fmt: skip
    scores = _scores(ctx, ids, [r[0] for r in picked])
    cards = [
        _card(r, samples.get(r[1], ("", None, None)), traces.get(r[0], ("", None, "", True)), scores)
        for r in picked
    ]
    return [_filters(picked), *cards]


def _with_ids(ctx: Context, picked: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The picked rows with their request and sample ids in place of the ids' hashes."""
    if not picked:
        return []
    marks = ", ".join("?" * len(picked))
    ids = {(h, sh): (r, s) for h, sh, r, s in ctx.con.sql(
        f"""SELECT hash(request_id) AS h, hash(sample_id), request_id, sample_id FROM traces
            WHERE h IN ({marks})""", params=[r[0] for r in picked]).fetchall()}  # fmt: skip
    return [(*ids[r[0], r[1]], *r[2:]) for r in picked]


def _scores(ctx: Context, ids: list[str], requests: list[str]) -> dict[str, dict[str, float]]:
    marks = ", ".join("?" * len(ids))
    out: dict[str, dict[str, float]] = {}
    for key, name, value in ctx.con.sql(
        f"SELECT sample_id, name, value FROM r_scores WHERE name IN ('S_v', 'S_t', 'S_I') AND sample_id IN ({marks})",
        params=ids,
    ).fetchall():
        out.setdefault(key, {})[name] = value
    version = ctx.filter_manifest.get("reward")
    if version:
        marks = ", ".join("?" * len(requests))
        for key, value in ctx.con.sql(
            f"""SELECT request_id, arg_max(value, created_at) FROM scores WHERE name = 'reward' AND version = ?
                AND request_id IN ({marks}) GROUP BY 1""",
            params=[version, *requests],
        ).fetchall():
            out.setdefault(key, {})["reward"] = value
    return out


def _filters(picked: list[tuple[Any, ...]]) -> str:
    def options(values: set[str]) -> str:
        return '<option value="">all</option>' + "".join(
            f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(values)
        )

    return (
        '<div class="filters">verdict <select id="f-verdict" onchange="r1vFilter()">'
        + options({r[2] for r in picked}) + '</select> subject <select id="f-subject" onchange="r1vFilter()">'
        + options({r[3] for r in picked}) + f'</select><span id="f-count">{len(picked)} shown</span></div>'
    )  # fmt: skip


def _card(
    pick: tuple[Any, ...],
    sample: tuple[Any, ...],
    trace: tuple[Any, ...],
    scores: dict[str, dict[str, float]],
) -> str:
    request_id, sample_id, verdict, subject, difficulty, kept, tokens = pick
    question, reference, images = sample
    think, answer, teacher, whole = trace  # whole: no think was parsed out, the completion is shown
    thumbs = [t for t in map(first_thumbnail, images or []) if t]
    marks = {**scores.get(sample_id, {}), **scores.get(request_id, {})}
    tags = [f'<span class="tag {esc(verdict)}">{esc(verdict)}</span>', f'<span class="tag">{esc(subject)}</span>',
            f'<span class="tag">level {esc(difficulty)}</span>' if difficulty is not None else "",
            f'<span class="tag">{"kept" if kept else "not kept"}</span>', f'<span class="tag">{esc(teacher)}</span>']  # fmt: skip
    cut = " … (cut)" if think and len(think) > THINK_CHARS else ""
    return (
        f'<div class="ex" data-verdict="{esc(verdict)}" data-subject="{esc(subject)}">'
        + ('<div class="thumbs">' + "".join(f'<img src="{t}" alt="the problem\'s image">' for t in thumbs) + "</div>" if thumbs else "")
        + '<div class="body">' + "".join(tags)
        + f'<span class="muted">{esc(_marks(marks))}</span><pre>{esc(question)}</pre>'
        + f"<details><summary>{'trace' if whole else 'think'} (~{tokens:,} tokens)</summary><pre>{esc((think or '')[:THINK_CHARS])}{cut}</pre></details>"
        + f"<div><b>answer</b> {esc(answer)} <span class='muted'>reference: {esc(reference)}</span></div></div></div>"
    )  # fmt: skip


def _marks(marks: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in marks.items())
