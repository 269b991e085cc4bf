"""`mix` reads the SFT rows of a big store a group of trace parts at a time (`kinds.PART_ROWS`)
and the RL rows in parts split by sample (`kinds.RL_PART_ROWS`), and its report builds its table
of traces group by group (`report.data.GROUP_ROWS`): the same rows, card and report as in one
pass. (Why: in one query DuckDB built its hash tables on every kept trace, and ran out of mix's
256MB at 20M traces; bench/mix.py shows it. The report's part shows at test size under a
smaller limit.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import r1v_data.outputs.report.data as report_data
import r1v_data.stages.mix as mix
from r1v_data.config import DRLCConfig, MixConfig
from r1v_data.outputs.report import render_report
from r1v_data.store import Store, schema, utcnow

# 600 samples with 10 traces each (half of them kept), texts of ~6 kB: 18 MB of kept text
_SAMPLES = "SELECT printf('%032x', k) AS sample_id, 'synthetic' AS source, printf('Question %d?', k) AS question, \
[]::VARCHAR[] AS options, (k % 7)::VARCHAR AS answer, $run AS run_id, $now::TIMESTAMPTZ AS created_at FROM range(600) r(k)"
_TRACES = "SELECT printf('r%031x', k) AS request_id, printf('%032x', k // 10) AS sample_id, 't' AS teacher, \
1 AS round, (k % 10)::INT AS sample_index, 'p/1' AS prompt_version, repeat(md5(k::VARCHAR), 190) || '</think> 1' AS text, \
(k % 7)::VARCHAR AS answer, 'correct' AS verdict, 'generated' AS provenance, $run AS run_id, \
$now::TIMESTAMPTZ AS created_at FROM range(6000) r(k)"
_DECISIONS = (
    "SELECT sample_id, NULL::VARCHAR AS request_id, 'sample' AS stage, true AS kept, 'kept' AS reason, \
$run AS run_id, $now::TIMESTAMPTZ AS created_at FROM range(600) r(k), (SELECT printf('%032x', k) AS sample_id) \
UNION ALL SELECT printf('%032x', k // 10), printf('r%031x', k), 'selected', k % 2 = 0, 'tau', $run, $now::TIMESTAMPTZ \
FROM range(6000) r(k)"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _decided_store(tmp_path_factory.mktemp("parts") / "store", _SAMPLES, _TRACES, _DECISIONS, 200)[0]


def _decided_store(
    root: Path, samples_sql: str, traces_sql: str, decisions_sql: str, part_rows: int
) -> tuple[Path, str]:
    """A store of synthetic samples (no images) and traces in parts of `part_rows`, with a filter
    run's decisions; the store and that run's id."""
    with Store.open(root, write=True, create=True) as s:
        run, now = s.begin_run("ingest"), utcnow()
        samples = duckdb.sql(samples_sql, params={"run": run, "now": now}).to_arrow_table()
        images = pa.array([[]] * len(samples), schema.load("samples").arrow.field("images").type)
        s.write_part("samples", samples.append_column("images", images), run, 0)
        traces = duckdb.sql(traces_sql, params={"run": run, "now": now}).to_arrow_table()
        for seq in range(0, len(traces), part_rows):  # 200: parts of 1.2 MB, as generate writes them
            s.write_part("traces", traces.slice(seq, part_rows), run, 1 + seq)
        s.finish_run(run, "ok", {}, {"command": "ingest"})
        run = s.begin_run("filter")
        decisions = duckdb.sql(decisions_sql, params={"run": run, "now": now}).to_arrow_table()
        s.write_part("decisions", decisions, run, 1)
        s.finish_run(run, "ok", {}, {"command": "filter", "config": {}})
    return root, run


def _mix(store: Path, out: Path) -> tuple[list[str], dict[str, list[str]], str, str]:
    result = mix.run_mix(MixConfig(store=store, out=out, kinds=["sft", "rl"]))
    rows = {k: sorted(json.dumps(r, sort_keys=True, default=str) for r in ds.dataset(out / k / "data").to_table().to_pylist())
            for k in ("sft", "rl")}  # fmt: skip
    assert [len(rows["sft"]), len(rows["rl"])] == [result.rows["sft"], result.rows["rl"]] == [3000, 600]
    card = (out / "README.md").read_text()
    card = "\n".join(line for line in card.splitlines() if "_size:" not in line and "num_bytes:" not in line)
    # the SFT rows in the traces' own order, group after group as in one pass
    order = ds.dataset(out / "sft" / "data").to_table(columns=["id"]).column("id").to_pylist()
    return order, rows, card, (out / "report.html").read_text()


def test_parts_make_the_rows_card_and_report_of_one_pass(store: Path, tmp_path: Path, monkeypatch) -> None:
    whole = _mix(store, tmp_path / "whole")
    monkeypatch.setattr(mix, "PART_ROWS", 170)  # 30 groups of one trace part
    monkeypatch.setattr(mix, "RL_PART_ROWS", 170)  # 4 parts of the RL rows
    monkeypatch.setattr(report_data, "GROUP_ROWS", 450)  # 15 groups of two trace parts
    assert _mix(store, tmp_path / "parts") == whole


# 200k traces with ids as long as real ones: the report's one-query join of every trace to its
# decision and sample needed 64MB here; group by group it keeps to 40MB
_BIG_SAMPLES = _SAMPLES.replace("range(600)", "range(20000)")
_BIG_TRACES = _TRACES.replace("repeat(md5(k::VARCHAR), 190)", "'think ' || k").replace(
    "range(6000)", "range(200000)"
)
_BIG_DECISIONS = _DECISIONS.replace("range(600)", "range(20000)").replace("range(6000)", "range(200000)")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("big") / "store"
    return _decided_store(root, _BIG_SAMPLES, _BIG_TRACES, _BIG_DECISIONS, 20000)


def test_report_of_a_big_store_keeps_to_a_small_memory_limit(big: tuple[Path, str], monkeypatch) -> None:
    monkeypatch.setattr(report_data, "GROUP_ROWS", 20000, raising=False)  # (raising: to run it on older code)
    html = render_report(Store.open(big[0]), big[1], {"config": {}}, DRLCConfig(), memory_limit="40MB")
    assert "200,000 traces" in html and "100,000" in html  # every trace counted, half of them kept


def test_report_holds_no_trace_table_in_memory(big: tuple[Path, str], tmp_path: Path, monkeypatch) -> None:
    """The report's row per trace is written a group at a time to Parquet files, which its sections
    stream. As one temporary table DuckDB kept it in memory as far as its limit let it (28 MB here,
    56 MB at 400k traces; from ~2M traces on, mix's whole 256 MB: mix's peak grew with the store)."""
    monkeypatch.setattr(report_data, "GROUP_ROWS", 20000)
    store = Store.open(big[0])
    con = store.connect()
    try:
        report_data.prepare(store, con, big[1], DRLCConfig(), tmp_path)
        held = con.sql("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
        counted = con.sql("SELECT count(*), count(*) FILTER (kept) FROM r_traces").fetchall()
        assert counted == [(200000, 100000)]
    finally:
        con.close()
    assert held < 1 << 20


_EXPORT_PEAK = """
import sys
import pyarrow as pa
from r1v_data.config import ExportConfig
from r1v_data.stages.export import run_export
run_export(ExportConfig(source=sys.argv[1], dest=sys.argv[2], format="llamafactory"))
print(pa.default_memory_pool().max_memory())"""


def test_llamafactory_export_holds_a_row_group_not_the_shards(store: Path, tmp_path: Path) -> None:
    """The export reads the SFT shards a row group at a time, shard after shard: a dataset scan
    read row groups of several shards ahead (380 MB more at 300k rows of bench/mix.py's mix).
    Arrow's peak allocation, in a process of its own, counts what was held."""
    mix.run_mix(
        MixConfig(store=store, out=tmp_path / "mix", kinds=["sft"], shard_bytes=1 << 20, report=False)
    )
    assert len(list((tmp_path / "mix" / "sft" / "data").iterdir())) > 10
    out = subprocess.run([sys.executable, "-c", _EXPORT_PEAK, str(tmp_path / "mix"), str(tmp_path / "lf")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert (tmp_path / "lf" / "r1v_sft.jsonl").read_text().count("\n") == 3000
    assert int(out.stdout.split()[-1]) < 8 << 20, out.stdout  # 19.8 MB before (every shard), 4.9 MB now
