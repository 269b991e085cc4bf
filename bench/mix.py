"""`mix` into shards at two sizes: rows/s and peak RSS at 100k and 1M SFT rows (memory should stay flat).

    python bench/mix.py [--sizes 100000 1000000]

For each size, a scratch store gets that many synthetic traces (bench/filter.py's generator, 10
per sample, a small PNG on every 10th sample), is filtered with everything kept (tau 0, no
dedup), then mixed into 64 MB shards in a child process whose peak RSS is its own. Beside it, the
baseline: DuckDB copying the very same selection (the kept traces joined to their samples, images
included) straight into one zstd Parquet file, also in its own process: the ceiling for moving
these rows, without the message structure, HF features, shards or card that mix writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from filter import build, peak_rss_mb  # bench/filter.py: the same synthetic store


def child(store: Path, out: Path) -> None:
    from r1v_data.config import MixConfig
    from r1v_data.stages.mix import run_mix

    start = time.perf_counter()
    r = run_mix(MixConfig(store=store, out=out, kinds=["sft"], shard_bytes=64 << 20))
    print(json.dumps({"rows": r.rows["sft"], "shards": r.shards["sft"], "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb()}))  # fmt: skip


def baseline(store: Path, out: Path) -> None:
    from r1v_data.outputs.kinds import SFT_QUERY
    from r1v_data.store import Store

    s = Store.open(store)
    run = s.latest_run("filter")[0]
    con = s.connect()
    con.execute("SET memory_limit = '256MB'")
    start = time.perf_counter()
    con.execute(
        f"COPY ({SFT_QUERY.replace('$run', repr(run))}) TO '{out}.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )
    rows = con.sql(f"SELECT count(*) FROM '{out}.parquet'").fetchall()[0][0]
    print(
        json.dumps(
            {"rows": rows, "shards": 1, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--child", nargs=2, type=Path, metavar=("STORE", "OUT"))
    ap.add_argument("--baseline", nargs=2, type=Path, metavar=("STORE", "OUT"))
    args = ap.parse_args()
    if args.child or args.baseline:
        (child if args.child else baseline)(*(args.child or args.baseline))
        return
    from r1v_data.config import FilterConfig
    from r1v_data.stages.filter import run_filter

    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            build(store, n, 10, 10)
            run_filter(FilterConfig(store=store, dedup=False, keep_truncated=True))
            for label, flag in (("duckdb COPY", "--baseline"), ("r1v mix    ", "--child")):
                proc = subprocess.run([sys.executable, __file__, flag, str(store), str(Path(tmp) / flag[2:])],
                                      capture_output=True, text=True, check=True)  # fmt: skip
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{label} {r['rows']:>9,} SFT rows  {r['seconds']:>6.1f} s  {r['rows'] / r['seconds']:>8,.0f} rows/s  "
                      f"{r['shards']:>3} shards  peak RSS {r['peak_rss_mb']:>6.0f} MB", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
