"""The report at scale: tables ordered by a count list tied rows by name, the same on every run (DuckDB's
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


def test_a_clipped_histogram_of_many_traces_keeps_to_a_small_memory_limit() -> None:
    """The 99th percentile the length histograms clip at is counted per value: DuckDB's
    quantile_cont held every value (6M here need 48 MB; 20M traces ran out of mix's 256 MB)."""
    from r1v_data.outputs.report.data import Context, binned

    con = duckdb.connect()
    con.execute("SET memory_limit = '32MB'")
    con.execute("CREATE VIEW v AS SELECT 's' AS series, (k % 5000)::BIGINT AS x FROM range(6000000) r(k)")
    edges, counts = binned(Context(con, None), "SELECT series, x FROM v", clip=0.99)
    assert edges[0] == 0 and round(edges[-1], 2) == 4949.01 and sum(counts["s"]) == 6_000_000
