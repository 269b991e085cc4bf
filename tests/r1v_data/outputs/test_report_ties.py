"""The report's tables ordered by a count list tied rows by name, the same on every run (DuckDB's
aggregation hands its groups over in any order: teachers with as many requests each came out in
another order now and then)."""

from __future__ import annotations

import duckdb

from r1v_data.outputs.report.traces import _USAGE


def test_teachers_with_as_many_requests_are_listed_by_name() -> None:
    con = duckdb.connect()
    con.execute("""CREATE TABLE r_traces AS SELECT ['zeta', 'alpha', 'mu', 'beta'][k % 4 + 1] AS teacher,
                   NULL::VARCHAR AS error, 10 AS prompt_tokens, 20 AS completion_tokens, 1.0 AS latency_s
                   FROM range(4000) r(k)""")  # fmt: skip
    for _ in range(20):
        assert [r[0] for r in con.sql(_USAGE).fetchall()] == ["alpha", "beta", "mu", "zeta"]
