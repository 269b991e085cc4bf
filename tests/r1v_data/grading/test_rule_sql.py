"""The rule rubric in DuckDB (`rule_sql`) gives every trace the level and detail `rule_score` gives it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from conftest import SHARED_DATA, answer_key, ingest_json, mathv_with_outputs, run_cli
from servers.fake_openai import FakeOpenAIProcess

from r1v_data.grading.rewards import rule_score
from r1v_data.grading.rule_sql import needs_parsing, rule_levels
from r1v_data.store import Store

_COLUMNS = ("request_id", "sample_id", "error", "text", "think", "answer", "think_closed", "truncated",
            "repetition", "verdict", "completion_tokens", "sampling")  # fmt: skip
_SAMPLING = pa.struct([("max_tokens", pa.int64())])
_TYPES = {"think_closed": pa.bool_(), "truncated": pa.bool_(), "repetition": pa.bool_(),
          "completion_tokens": pa.int64(), "sampling": _SAMPLING}  # fmt: skip


def _both(con: duckdb.DuckDBPyConnection, traces: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(SQL's {request_id: (value, detail)}, Python's, rows left to Python)."""
    rows = con.sql(traces).to_arrow_table().to_pylist()
    python = {r["request_id"]: (float(s.value), s.detail) for r in rows for s in [rule_score(r)]}
    sql = {rid: (value, detail) for rid, _, value, detail in con.sql(rule_levels(traces)).fetchall()}
    left = len(con.sql(needs_parsing(traces)).fetchall())
    return sql, {k: v for k, v in python.items() if k in sql}, left


def _built_rows() -> pa.Table:
    """Rows reaching every branch: verdicts, flags, blank and odd whitespace, thinks at the
    20-character line, token counts around 90% of budgets (the percentage's rounding)."""
    rng = random.Random(5)
    spaces = ["", " ", "\n\t", "\u3000", "\xa0", "\x1c", "\u2028 ", "\x0b", "\x85\u205f"]
    rows = []
    for i in range(4000):
        budget = rng.choice([None, 0, -5, 100, 1000, 1024, 2000, 4096, 7])
        tokens = (
            rng.choice([None, 0, 1, 5, 6])
            if budget in (None, 0, -5)
            else rng.randint(int(budget * 0.7), budget)
        )
        think = rng.choice(
            [
                None,
                "",
                "x" * rng.randint(15, 25),
                rng.choice(spaces) + "y" * 19 + rng.choice(spaces),
                # whitespace inside, at the 20-character line: only the ends are stripped
                rng.choice(spaces)
                + "y" * rng.randint(5, 15)
                + rng.choice(spaces) * 3
                + "é" * rng.randint(1, 9)
                + rng.choice(spaces) * rng.randint(1, 30),
            ]
        )
        rows.append({
            "request_id": f"r{i}", "sample_id": f"s{i % 50}",
            "error": rng.choice([None, None, "", " \n", "boom  happened"]),
            "text": rng.choice(["A long trace. The answer is 4.", "", rng.choice(spaces), None]),
            "think": think,
            "answer": rng.choice(["4", "", rng.choice(spaces), None, " B "]),
            "think_closed": rng.choice([True, False, None]) if i % 7 == 0 else rng.choice([True, False]),
            "truncated": rng.choice([True, False]), "repetition": rng.choice([True, False, False]),
            "verdict": rng.choice(["correct", "correct", "wrong", "unverifiable", "timeout", "", None]),
            "completion_tokens": tokens, "sampling": None if budget is None else {"max_tokens": budget},
        })  # fmt: skip
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, _TYPES.get(c, pa.string())) for c in _COLUMNS]))


def test_every_branch_and_edge_gets_the_python_level_and_detail() -> None:
    con = duckdb.connect()
    con.register("built", _built_rows())
    sql, python, left = _both(con, "SELECT * FROM built")
    assert sql == python
    assert len(sql) > 2500 and left > 0  # most in SQL; flags missing or an error: Python's
    assert {v for v, _ in sql.values()} == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    details = " ".join(d for _, d in sql.values())
    for part in ("near the budget (9", "short think (19 chars)", "unverified (no verdict)", "empty completion",
                 "no answer", "think unclosed", "no think", "/1024 tokens", "5 tokens"):  # fmt: skip
        assert part in details, part


def test_the_budget_percentage_rounds_as_python_does() -> None:
    pairs = [(t, b) for b in (7, 10, 40, 200, 1000, 1024, 2000, 3333) for t in range(int(b * 0.89), b + 1)]
    got = duckdb.sql(
        "SELECT t, b, printf('%.0f%%', (t / b) * 100) FROM (SELECT unnest($1::BIGINT[]) AS t, unnest($2::BIGINT[]) AS b)",
        params=[[t for t, _ in pairs], [b for _, b in pairs]],
    ).fetchall()
    assert len(got) == len(pairs)
    assert [p for _, _, p in got] == [f"{t / b:.0%}" for t, b, _ in got]


def test_real_stores_get_the_python_levels(tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    ingest_json("builtin:sample", "--store", generated)
    key = answer_key(generated, tmp_path / "key.json")
    with FakeOpenAIProcess(pad_words=30, answers=key, solve_rate=0.6) as srv:
        run_cli("generate", "--store", generated, "--teacher", f"openai:{srv.url}#t", "--n", "2")
    levels: set[tuple[float, str]] = set()
    for store in (generated, mathv_with_outputs(tmp_path / "mathv", SHARED_DATA)):
        con = Store.open(store).connect()
        sql, python, _ = _both(con, f"SELECT {', '.join(_COLUMNS)} FROM traces")
        assert len(sql) >= 76 and sql == python, store
        levels |= set(sql.values())
    assert len({value for value, _ in levels}) >= 4 and len(levels) > 5


def test_the_space_class_is_what_python_strips() -> None:
    from r1v_data.grading.rule_sql import _SPACE

    every = [chr(i) for i in range(0x3001)]  # no space character lies above U+3000
    spaces = {r[0] for r in duckdb.sql(f"SELECT c FROM unnest($c) u(c) WHERE regexp_matches(c, '^{_SPACE}$')",
                                       params={"c": every}).fetchall()}  # fmt: skip
    assert spaces == {c for c in every if c.isspace()}
