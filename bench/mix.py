"""`mix` (and `export`) at 1M, 5M and 20M traces: rows/s and peak RSS, which should stay flat.

    python bench/mix.py [--sizes 1000000 5000000 20000000] [--kinds sft rl] [--export llamafactory verl]
                        [--built DIR]

For each size, a scratch store gets that many synthetic traces (bench/filter.py's `build()`, 10
per sample, a small PNG on every 10th sample) and a filter run's decisions written straight with
DuckDB: every trace and every sample kept, as `filter --tau 0` without dedup would write them (the
real filter is not run here: this measures mix alone). Then, each in a child process whose peak
RSS (VmHWM) is its own:

- baseline: DuckDB copying the very same selection (the kept traces joined to their samples,
  images included) straight into one zstd Parquet file: the ceiling for moving these rows,
  without the message structure, HF features, shards, card and report that mix writes;
- r1v mix of the kinds asked for into 64 MB shards, with its dataset card and report.html;
- r1v export of that mix in each format asked for (llamafactory reads the SFT shards; easyr1 and
  verl the RL ones, so they need `--kinds ... rl`).

With `--built DIR` the decided stores are kept as DIR/store-N and copied from there on the next run
(a 20M store takes minutes to build).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from filter import _vm_hwm, build, peak_rss_mb  # bench/filter.py: the same synthetic store

# the decisions of a filter that keeps everything: one row per sample, then one per trace
_DECISIONS = """
SELECT sample_id, NULL::VARCHAR AS request_id, 'sample' AS stage, true AS kept,
       'kept: no duplicate or contamination found' AS reason
FROM read_parquet('{root}/samples/*.parquet')
UNION ALL
SELECT sample_id, request_id, 'selected' AS stage, true AS kept, 'kept: tau 0' AS reason
FROM read_parquet('{root}/traces/*.parquet')"""


def decide(store: Path) -> None:
    """A successful filter run keeping every sample and trace, written in bounded parts."""
    import duckdb
    import pyarrow as pa

    from r1v_data.store import Store, utcnow

    con = duckdb.connect()
    con.execute("SET memory_limit = '512MB'")
    reader = con.sql(_DECISIONS.format(root=store)).to_arrow_reader(1_000_000)
    with Store.open(store, write=True, create=False) as s:
        run, now, rows = s.begin_run("filter"), utcnow(), 0
        for seq, batch in enumerate(reader):
            table = pa.Table.from_batches([batch])
            table = table.append_column("run_id", pa.array([run] * len(table), pa.string()))
            table = table.append_column(
                "created_at", pa.array([now] * len(table), pa.timestamp("us", tz="UTC"))
            )
            s.write_part("decisions", table, run, seq + 1)
            rows += len(table)
        manifest = {
            "command": "filter",
            "run_id": run,
            "config": {"tau": 0, "dedup": False},
            "counts": {"decisions": rows},
        }
        s.finish_run(run, "ok", {"decisions": rows}, manifest)


def ready(store: Path, n: int, built: Path | None) -> None:
    """A decided store of `n` traces at `store`: built, or copied from `built` (built there first)."""
    if built is None:
        build(store, n, 10, 10)
        decide(store)
        return
    kept = built / f"store-{n}"
    if not (kept / ".decided").exists():
        shutil.rmtree(kept, ignore_errors=True)
        build(kept, n, 10, 10)
        decide(kept)
        (kept / ".decided").touch()
    shutil.copytree(kept, store)


def _cpu_s() -> float:
    """This process's CPU seconds, DuckDB's threads included: on a shared machine the neighbours
    move wall time far more than they move this."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(store: Path, out: Path, kinds: str) -> None:
    from r1v_data.config import MixConfig
    from r1v_data.stages.mix import run_mix

    start = time.perf_counter()
    r = run_mix(MixConfig(store=store, out=out, kinds=kinds.split(","), shard_bytes=64 << 20))
    print(json.dumps({"rows": sum(r.rows.values()), "shards": sum(r.shards.values()),
                      "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "cpu_s": _cpu_s()}))  # fmt: skip


def export(source: Path, dest: Path, layout: str) -> None:
    from r1v_data.config import ExportConfig
    from r1v_data.stages.export import run_export

    start = time.perf_counter()
    r = run_export(ExportConfig(source=source, dest=dest, format=layout))
    print(json.dumps({"rows": r.rows, "shards": r.images, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb(), "cpu_s": _cpu_s()}))  # fmt: skip


def baseline(store: Path, out: Path, kinds: str) -> None:
    import duckdb

    from r1v_data.outputs.kinds import SFT_ONE_QUERY
    from r1v_data.store import Store

    s = Store.open(store)
    run = s.latest_run("filter")[0]
    for limit in ("256MB", "1GB"):  # mix's own limit first; DuckDB's join ran out of it at 5M rows
        con = s.connect()
        con.execute(f"SET memory_limit = '{limit}'")
        con.execute("SET preserve_insertion_order = false")  # a copy need not keep the order
        start = time.perf_counter()
        try:
            sql = SFT_ONE_QUERY.replace("$run", repr(run))
            con.execute(f"COPY ({sql}) TO '{out}.parquet' (FORMAT parquet, COMPRESSION zstd)")
            break
        except duckdb.OutOfMemoryException:
            con.close()
            # the parent prints the last line if it has to stop this process
            print(f"{limit} ran out after {time.perf_counter() - start:.0f} s;", file=sys.stderr, flush=True)
    rows = con.sql(f"SELECT count(*) FROM '{out}.parquet'").fetchall()[0][0]
    print(json.dumps({"rows": rows, "shards": 1, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb(), "cpu_s": _cpu_s(), "limit": limit}))  # fmt: skip


def _run(label: str, unit: str, args: list[str], limit: tuple[float, float]) -> None:
    """One child, stopped past `limit` (seconds, MB of peak RSS): a line of figures, or of what
    happened to it, and the bench goes on (the other rows of this size still count)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=err, text=True)
        killed = _watch(proc, *limit)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if killed or proc.returncode:
        said = "".join(f"  {x[:300]}" for x in stderr.strip().splitlines()[-1:])  # killed: nothing said
        why = killed or f"failed (exit status {proc.returncode})"
        print(f"{label:<18} {why}{said}  (load {load})", flush=True)
        return
    r = json.loads(stdout.strip().splitlines()[-1])
    label += f" ({r['limit']})" if "limit" in r else ""
    print(f"{label:<18} {r['rows']:>10,} {unit:<5} {r['seconds']:>7.1f} s  {r['rows'] / r['seconds']:>8,.0f} rows/s {r['cpu_s']:>7.1f} CPU-s  "
          f"{r['shards']:>6} {'images' if 'export' in label else 'shards'}  peak RSS {r['peak_rss_mb']:>6.0f} MB  "
          f"(load {load})", flush=True)  # fmt: skip


def _watch(proc: subprocess.Popen[str], seconds: float, mb: float) -> str | None:
    """Wait for `proc`, reading its peak RSS twice a second; kill it past `seconds` or `mb`, and
    say so (a baseline that spills or runs out of memory would otherwise hold the bench for hours)."""
    start, peak = time.perf_counter(), 0.0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm(proc.pid) or 0.0)
        elapsed = time.perf_counter() - start
        if elapsed > seconds or peak > mb:
            proc.kill()
            proc.wait()
            return f"killed after {elapsed:.0f} s at {peak:.0f} MB peak RSS (limits {seconds:.0f} s, {mb:.0f} MB)"
        time.sleep(0.5)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    ap.add_argument("--kinds", nargs="+", default=["sft"], choices=["sft", "rl"])
    ap.add_argument(
        "--export", nargs="*", default=["llamafactory"], choices=["llamafactory", "easyr1", "verl"]
    )
    ap.add_argument("--built", type=Path, help="keep the decided stores here and reuse them")
    ap.add_argument("--baseline-limit", type=float, nargs=2, default=[900, 2048], metavar=("S", "MB"),
                    help="stop DuckDB's COPY past S seconds or MB of peak RSS (and say so)")  # fmt: skip
    ap.add_argument("--limit", type=float, nargs=2, default=[3600, 4096], metavar=("S", "MB"),
                    help="the same for mix and export")  # fmt: skip
    ap.add_argument("--child", nargs=3, metavar=("STORE", "OUT", "KINDS"))
    ap.add_argument("--baseline", nargs=3, metavar=("STORE", "OUT", "KINDS"))
    ap.add_argument("--export-child", nargs=3, metavar=("SOURCE", "DEST", "FORMAT"))
    args = ap.parse_args()
    if args.child or args.baseline or args.export_child:
        task = child if args.child else baseline if args.baseline else export
        task(*(Path(a) for a in (args.child or args.baseline or args.export_child)[:2]),
             (args.child or args.baseline or args.export_child)[2])  # fmt: skip
        return
    kinds = ",".join(args.kinds)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            store, mix = Path(tmp) / "store", Path(tmp) / "mix"
            start = time.perf_counter()
            ready(store, n, args.built)
            print(
                f"(store of {n:,} traces built and decided in {time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            copy = ["--baseline", str(store), str(Path(tmp) / "copy"), kinds]
            _run("duckdb COPY", "SFT", copy, args.baseline_limit)
            _run(f"r1v mix {kinds}", "rows", ["--child", str(store), str(mix), kinds], args.limit)
            for layout in args.export:
                _run(
                    f"r1v export {layout}",
                    "rows",
                    ["--export-child", str(mix), str(Path(tmp) / layout), layout],
                    args.limit,
                )
                subprocess.run(["rm", "-rf", str(Path(tmp) / layout)], check=True)  # disk: 20M rows of JSONL


if __name__ == "__main__":
    main()
