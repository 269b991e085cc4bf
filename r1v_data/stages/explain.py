"""`explain`: one sample's whole history: where it came from, its scores, traces and decisions."""

from __future__ import annotations

from typing import Any

from r1v_data.errors import R1VError
from r1v_data.store import Store

_SECTIONS = {
    "provenance": "SELECT source, source_id, location, answer, run_id FROM provenance WHERE sample_id = ? "
    "ORDER BY created_at",
    "scores": "SELECT request_id, scorer, version, name, value, detail, run_id FROM scores WHERE sample_id = ? "
    "ORDER BY created_at, scorer, name",
    "traces": "SELECT request_id, teacher, round, sample_index, provenance, sampling.repetition_penalty AS "
    "repetition_penalty, sampling.max_tokens AS max_tokens, finish_reason, completion_tokens, think_closed, "
    "truncated, repetition, answer, verdict, error, run_id FROM traces WHERE sample_id = ? "
    "ORDER BY round, sample_index, created_at",
    "decisions": "SELECT run_id, request_id, stage, kept, reason FROM decisions WHERE sample_id = ? "
    "ORDER BY created_at, request_id NULLS FIRST",
}


def resolve_sample_id(store: Store, prefix: str) -> str:
    """A full sample id from a unique prefix (at least 6 characters), as git resolves commits."""
    if len(prefix) < 6:
        raise R1VError(f"sample id {prefix!r}: give at least 6 characters")
    rows = store.query(
        "SELECT sample_id FROM samples WHERE starts_with(sample_id, ?) LIMIT 6", params=[prefix]
    )[1]
    if not rows:
        raise R1VError(f"no sample id starts with {prefix!r} in {store.root}")
    if len(rows) > 1:
        shown = ", ".join(r[0][:16] for r in rows[:5])
        raise R1VError(f"sample id prefix {prefix!r} is ambiguous ({shown}...): give more characters")
    return str(rows[0][0])


def explain(store: Store, prefix: str) -> dict[str, Any]:
    sample_id = resolve_sample_id(store, prefix)
    cols, rows = store.query(
        "SELECT sample_id, source, source_id, question, options, answer, answer_type, subject, difficulty, "
        "caption, list_transform(images, lambda i: {'format': i.format, 'width': i.width, 'height': i.height, "
        "'sha256': i.sha256}) AS images, run_id FROM samples WHERE sample_id = ?",
        params=[sample_id],
    )
    out: dict[str, Any] = {"sample": dict(zip(cols, rows[0], strict=True))}
    for name, sql in _SECTIONS.items():
        cols, rows = store.query(sql, params=[sample_id])
        out[name] = [dict(zip(cols, r, strict=True)) for r in rows]
    return out
