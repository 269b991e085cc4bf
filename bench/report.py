"""`r1v-data report` at two sizes: seconds, page size and peak RSS at 100k and 1M traces.

    python bench/report.py [--sizes 100000 1000000] [--examples 24]

For each size, a scratch store gets that many synthetic traces (bench/filter.py's generator, 10
per sample, a small PNG on every 10th sample) and synthetic QDAM/VTIA scores for every sample,
is filtered (tau 3, no dedup), then reported on in a child process whose peak RSS is its own.
Beside it, the ceiling: DuckDB reading once the trace columns the report aggregates (the texts'
lengths included), also in its own process. The page should stay a few hundred kB whatever the
size: the plots are aggregates and the gallery holds --examples traces.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from filter import build, peak_rss_mb  # bench/filter.py: the same synthetic store

NAMES = ("S_v", "S_t", "S_I", "image_clarity", "difficulty", "integration")


def add_scores(store: Path, seed: int = 0) -> None:
    """One value per sample for each of NAMES, as `r1v-data score` writes them."""
    import pyarrow as pa

    from r1v_data.store import Store, utcnow

    rng = random.Random(seed)
    with Store.open(store, write=True) as s:
        ids = [r[0] for r in s.query("SELECT sample_id FROM samples")[1]]
        run, now = s.begin_run("bench"), utcnow()
        for k, name in enumerate(NAMES):
            table = pa.table({
                "sample_id": ids, "request_id": pa.nulls(len(ids), pa.string()),
                "scorer": ["vtia" if name in ("S_I", "integration") else "qdam"] * len(ids),
                "version": ["bench/1"] * len(ids), "name": [name] * len(ids),
                "value": [rng.betavariate(2, 3) for _ in ids], "detail": pa.nulls(len(ids), pa.string()),
                "run_id": [run] * len(ids), "created_at": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
            })  # fmt: skip
            s.write_part("scores", table, run, k)
        s.finish_run(run, "ok", {}, {"command": "bench"})


def child(store: Path, out: Path, examples: int) -> None:
    from r1v_data.config import ReportConfig
    from r1v_data.stages.report import run_report

    start = time.perf_counter()
    r = run_report(ReportConfig(store=store, out=out, examples=examples))
    print(
        json.dumps({"bytes": r.bytes, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()})
    )


def ceiling(store: Path) -> None:
    import duckdb

    start = time.perf_counter()
    glob = str(store / "traces" / "*.parquet")
    duckdb.sql(f"""SELECT teacher, round, verdict, count(*), sum(strlen(text)), sum(strlen(think)),
                          sum(completion_tokens) FROM read_parquet('{glob}') GROUP BY ALL""").fetchall()  # fmt: skip
    print(json.dumps({"bytes": 0, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


def measure(*args: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--examples", type=int, default=24)
    ap.add_argument("--child", nargs=2, type=Path, metavar=("STORE", "OUT"))
    ap.add_argument("--ceiling", type=Path, metavar="STORE")
    args = ap.parse_args()
    if args.child or args.ceiling:
        child(*args.child, args.examples) if args.child else ceiling(args.ceiling)
        return
    from r1v_data.config import FilterConfig
    from r1v_data.stages.filter import run_filter

    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store, out = Path(tmp) / "store", Path(tmp) / "report.html"
            build(store, n, 10, 10)
            add_scores(store)
            run_filter(FilterConfig(store=store, min_score=3, dedup=False))
            for label, flags in (("DuckDB scan (ceiling)", ["--ceiling", str(store)]),
                                 ("r1v report           ", ["--child", str(store), str(out), "--examples", str(args.examples)])):  # fmt: skip
                r = measure(*flags)
                size = f"{r['bytes'] / 1e6:5.2f} MB page" if r["bytes"] else " " * 13
                print(f"{label} {n:>9,} traces  {r['seconds']:>6.1f} s  {size}  peak RSS {r['peak_rss_mb']:>6.0f} MB",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
