"""`store_stats`: what a store holds, as one JSON-able dict (the SQL is here to be read)."""

from __future__ import annotations

from typing import Any

import duckdb

from r1v_data.backends.pricing import store_cost
from r1v_data.store import Store

# Quarantined rows still bad: not ingested since from the same place (fixed and re-ingested).
_OPEN_QUARANTINE = """(SELECT * FROM quarantine q WHERE NOT EXISTS (
    SELECT 1 FROM provenance p WHERE p.location = q.location AND p.created_at > q.created_at
    AND coalesce(p.source_path, p.source) = coalesce(q.source_path, q.source)))"""

# the latest successful filter run's decisions are the current selection ($run: its id)
_LAST_FILTER = "(SELECT * FROM decisions WHERE run_id = $run)"

_COUNTS = {
    "samples": "SELECT count(*) FROM samples",
    "quarantined": f"SELECT count(*) FROM {_OPEN_QUARANTINE}",
    "quarantined_total": "SELECT count(*) FROM quarantine",
    "traces": "SELECT count(*) FROM traces",
    "scores": "SELECT count(*) FROM scores",
    "decisions": "SELECT count(*) FROM decisions",
    "provenance": "SELECT count(*) FROM provenance",
    "images": "SELECT coalesce(sum(len(images)), 0) FROM samples",
    # the same problem stored once but given different answers by different sources
    "answer_conflicts": """SELECT count(*) FROM (SELECT sample_id FROM provenance
                           WHERE answer IS NOT NULL GROUP BY sample_id
                           HAVING count(DISTINCT answer) > 1)""",
}

_BREAKDOWNS = {
    # a sample from two sources counts under both
    "by_source": "SELECT source, count(DISTINCT sample_id) FROM provenance GROUP BY 1 ORDER BY 2 DESC, 1",
    "by_subject": "SELECT coalesce(subject, '(none)'), count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1",
    "by_difficulty": """SELECT coalesce(CAST(difficulty AS VARCHAR), '(none)'), count(*) FROM samples
                        GROUP BY 1 ORDER BY 1""",
    "by_answer_type": "SELECT coalesce(answer_type, '(none)'), count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC",
    "by_image_count": "SELECT CAST(len(images) AS VARCHAR), count(*) FROM samples GROUP BY len(images) ORDER BY len(images)",
    "by_image_format": """SELECT im.format, count(*) FROM (SELECT unnest(images) AS im FROM samples)
                          GROUP BY 1 ORDER BY 2 DESC""",
    "quarantine_reasons": f"SELECT reason, count(*) FROM {_OPEN_QUARANTINE} GROUP BY 1 ORDER BY 2 DESC, 1",
    "trace_verdicts": "SELECT coalesce(verdict, '(none)'), count(*) FROM traces GROUP BY 1 ORDER BY 2 DESC",
}

_FILTER_COUNTS = {
    "kept": f"SELECT count(*) FROM {_LAST_FILTER} WHERE kept AND request_id IS NOT NULL",
    "dropped": f"SELECT count(*) FROM {_LAST_FILTER} WHERE NOT kept AND request_id IS NOT NULL",
    "samples_dropped": f"SELECT count(*) FROM {_LAST_FILTER} WHERE NOT kept AND request_id IS NULL",
}
_DROPPED_BY_RULE = f"""SELECT stage, count(*) FROM {_LAST_FILTER} WHERE NOT kept AND request_id IS NOT NULL
                       GROUP BY 1 ORDER BY 2 DESC, 1"""

_IMAGE_SIZES = """
SELECT min(im.width), median(im.width), max(im.width), min(im.height), median(im.height),
       max(im.height), sum(octet_length(im.bytes))
FROM (SELECT unnest(images) AS im FROM samples)
"""


def store_stats(store: Store) -> dict[str, Any]:
    latest = store.latest_run("filter")
    run = {"run": latest[0] if latest else None}
    con = store.connect()
    try:
        out: dict[str, Any] = {name: int(con.sql(q).fetchall()[0][0]) for name, q in _COUNTS.items()}
        out |= {name: int(con.sql(q, params=run).fetchall()[0][0]) for name, q in _FILTER_COUNTS.items()}
        for name, q in _BREAKDOWNS.items():
            out[name] = {str(k): int(v) for k, v in con.sql(q).fetchall()}
        out["dropped_by_rule"] = {str(k): int(v) for k, v in con.sql(_DROPPED_BY_RULE, params=run).fetchall()}
        row = con.sql(_IMAGE_SIZES).fetchall()[0]
        keys = (
            "width_min",
            "width_median",
            "width_max",
            "height_min",
            "height_median",
            "height_max",
            "total_bytes",
        )
        out["image_sizes"] = {k: (int(v) if v is not None else None) for k, v in zip(keys, row, strict=True)}
        out["runs"] = _runs(con)
        out["cost"] = store_cost(con)
        out["batches"] = {str(k): int(v) for k, v in con.sql(_BATCH_STATES).fetchall()}
    finally:
        con.close()
    return out


# each provider batch by its latest event: "collected: completed", "submitted" (still out), ...
_BATCH_STATES = """SELECT CASE WHEN event = 'collected' THEN 'collected: ' || coalesce(state, '?') ELSE event END,
                          count(*) FROM (SELECT arg_max(event, created_at) AS event, arg_max(state, created_at) AS state
                                         FROM batches GROUP BY batch_key) GROUP BY 1 ORDER BY 1"""


def _runs(con: Any) -> list[dict[str, Any]]:
    try:
        rows = con.sql(
            "SELECT run_id, command, status, CAST(started_at AS VARCHAR), CAST(finished_at AS VARCHAR) FROM runs "
            "ORDER BY started_at DESC LIMIT 10"
        ).fetchall()
    except duckdb.CatalogException:  # catalog not attached (a writer held it): runs unknown
        return []
    return [
        {
            "run_id": r[0],
            "command": r[1],
            "status": r[2],
            "started_at": str(r[3]),
            "finished_at": str(r[4]) if r[4] else None,
        }
        for r in rows
    ]
