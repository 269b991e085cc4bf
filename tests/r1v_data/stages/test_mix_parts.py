"""`mix` reads the SFT and RL rows of a big store in parts (`kinds.PART_ROWS`), each joining only
its own samples' traces and decisions: the same rows and card as in one pass. (Why: in one query
DuckDB built its hash table on the kept traces, texts and all, and ran out of mix's 256MB at 20M
traces; bench/mix.py shows it, as a store of test size does not.)"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import r1v_data.stages.mix as mix
from r1v_data.config import MixConfig
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
    root = tmp_path_factory.mktemp("parts") / "store"
    with Store.open(root, write=True, create=True) as s:
        run, now = s.begin_run("ingest"), utcnow()
        samples = duckdb.sql(_SAMPLES, params={"run": run, "now": now}).to_arrow_table()
        images = pa.array([[]] * len(samples), schema.load("samples").arrow.field("images").type)
        s.write_part("samples", samples.append_column("images", images), run, 0)
        traces = duckdb.sql(_TRACES, params={"run": run, "now": now}).to_arrow_table()
        for seq in range(0, len(traces), 200):  # parts of 1.2 MB, as generate writes them
            s.write_part("traces", traces.slice(seq, 200), run, 1 + seq)
        s.finish_run(run, "ok", {}, {"command": "ingest"})
        run = s.begin_run("filter")
        s.write_part(
            "decisions", duckdb.sql(_DECISIONS, params={"run": run, "now": now}).to_arrow_table(), run, 1
        )
        s.finish_run(run, "ok", {}, {"command": "filter", "config": {}})
    return root


def _mix(store: Path, out: Path) -> tuple[dict[str, list[str]], str]:
    result = mix.run_mix(MixConfig(store=store, out=out, kinds=["sft", "rl"], report=False))
    rows = {k: sorted(json.dumps(r, sort_keys=True, default=str) for r in ds.dataset(out / k / "data").to_table().to_pylist())
            for k in ("sft", "rl")}  # fmt: skip
    assert [len(rows["sft"]), len(rows["rl"])] == [result.rows["sft"], result.rows["rl"]] == [3000, 600]
    card = (out / "README.md").read_text()
    return rows, "\n".join(
        line for line in card.splitlines() if "_size:" not in line and "num_bytes:" not in line
    )


def test_parts_make_the_rows_and_card_of_one_pass(store: Path, tmp_path: Path, monkeypatch) -> None:
    whole = _mix(store, tmp_path / "whole")
    monkeypatch.setattr(mix, "PART_ROWS", 170)  # 18 parts of the SFT rows, 4 of the RL rows
    assert _mix(store, tmp_path / "parts") == whole
