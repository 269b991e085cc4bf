"""The rule rubric of `rewards.rule_score` as one DuckDB query: the same level and the same detail
for every stored trace whose flags are set, at DuckDB's speed instead of ~8 µs a trace in Python.

`rule_levels(traces)` wraps a query whose rows carry the trace columns `rule_score` reads
(`request_id, sample_id, error, text, think, answer, think_closed, truncated, repetition, verdict,
completion_tokens, sampling`). Rows with a flag missing (`think_closed`, `truncated` or
`repetition` NULL: a hand-written import), and rows with an error, are not scored here: `rule_score` parses their text, so
`needs_parsing(traces)` selects them for it. `tests/r1v_data/grading/test_rule_sql.py` holds the two
to the same output on real stores and on rows built to reach every branch and edge.
"""

from __future__ import annotations

from r1v_data.grading.rewards import LONG_FRACTION, MIN_THINK_CHARS

__all__ = ["LEFT_TO_PYTHON", "needs_parsing", "rule_levels"]

# What Python's str.strip() removes: every character str.isspace() counts (RE2's \s leaves out \v)
_SPACE = r"[\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_NOT_SPACE = "[^" + _SPACE[1:]
# Rows scored here: flags set, and no error (a candidate trace never has one; an error's detail
# is Python's whitespace-collapsed text, left to `rule_score`).
_FLAGS_SET = (
    "think_closed IS NOT NULL AND truncated IS NOT NULL AND repetition IS NOT NULL"
    f" AND regexp_matches(coalesce(error, ''), '^{_SPACE}*$')"
)


# the condition on a trace row that `rule_levels` leaves it to `rule_score`
LEFT_TO_PYTHON = f"NOT ({_FLAGS_SET})"


def needs_parsing(traces: str) -> str:
    """The rows of `traces` that `rule_levels` leaves to `rule_score`."""
    return f"SELECT * FROM ({traces}) WHERE {LEFT_TO_PYTHON}"


def rule_levels(traces: str) -> str:
    """(request_id, sample_id, value, detail) of every row of `traces` with its flags set."""
    return f"""
WITH t AS (
    SELECT request_id, sample_id, verdict, completion_tokens AS tokens,
           regexp_matches(coalesce(text, ''), '^{_SPACE}*$') AS empty_text,
           regexp_matches(coalesce(answer, ''), '^{_SPACE}*$') AS no_answer,
           coalesce(think, '') AS think_text, length(regexp_extract(coalesce(think, ''), '^{_SPACE}+')) AS lead,
           -- notes joined with concat_ws, which skips NULLs: list functions cost twice the rest
           concat_ws(', ', CASE WHEN NOT think_closed THEN CASE WHEN think IS NULL THEN 'no think'
                                                                ELSE 'think unclosed' END END,
                     CASE WHEN truncated THEN 'truncated' END,
                     CASE WHEN repetition THEN 'repetitive' END) AS issues,
           sampling.max_tokens AS budget
    FROM ({traces}) WHERE {_FLAGS_SET}
), stripped AS (
    -- the think's stripped length where it is short. Past its leading space, it strips to under
    -- {MIN_THINK_CHARS} characters exactly when all it has past that many is space; most thinks are
    -- decided by one character there, and no regex runs over a whole think (this reads every trace)
    SELECT * EXCLUDE (think_text, lead, past),
           CASE WHEN past = '' OR (regexp_matches(past, '^{_SPACE}$')
                                   AND NOT regexp_matches(substring(think_text, lead + {MIN_THINK_CHARS + 1}), '{_NOT_SPACE}'))
                THEN length(regexp_replace(substring(think_text, lead + 1, {MIN_THINK_CHARS}), '{_SPACE}+$', '')) END AS think_chars
    FROM (SELECT *, substring(think_text, lead + {MIN_THINK_CHARS + 1}, 1) AS past FROM t)
), noted AS (
    SELECT *, CASE WHEN tokens IS NULL THEN NULL
                   WHEN budget IS NULL OR budget <= 0 THEN tokens || ' tokens'
                   ELSE tokens || '/' || budget || ' tokens' END AS length_note,
              CASE WHEN tokens IS NOT NULL AND budget > 0 THEN tokens / budget END AS used
    FROM stripped
), leveled AS (
    SELECT *, concat_ws(', ', CASE WHEN issues = '' THEN 'think closed' ELSE issues END, length_note) AS notes,
              concat_ws(', ', CASE WHEN think_chars < {MIN_THINK_CHARS} THEN 'short think (' || think_chars || ' chars)' END,
                        CASE WHEN used >= {LONG_FRACTION} THEN printf('near the budget (%.0f%%)', used * 100) END) AS minor
    FROM noted
)
SELECT request_id, sample_id,
       CASE WHEN empty_text OR no_answer THEN 0
            WHEN verdict IS DISTINCT FROM 'correct' THEN CASE WHEN issues <> '' THEN 1 ELSE 2 END
            WHEN issues <> '' THEN 3
            WHEN minor <> '' THEN 4
            ELSE 5 END::DOUBLE AS value,
       CASE WHEN empty_text THEN 'empty completion'
            WHEN no_answer THEN 'no answer'
            WHEN verdict IS DISTINCT FROM 'correct' THEN
                CASE WHEN verdict = 'wrong' THEN 'wrong'
                     ELSE 'unverified (' || coalesce(nullif(verdict, ''), 'no verdict') || ')' END || ', ' || notes
            WHEN issues <> '' THEN 'correct, ' || notes
            ELSE concat_ws(', ', 'correct', notes, nullif(minor, '')) END AS detail
FROM leveled"""
