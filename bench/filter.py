"""The whole `filter` over N synthetic traces, beside DuckDB's plain scan of the same Parquet and
datasketch on the dedup step, in one run.

    python bench/filter.py [--traces 1000000 5000000 20000000] [--per-sample 10] [--image-every 10]

A scratch store gets N / per-sample seeded synthetic math problems (every `image-every`-th with a
small PNG; 3% are planted near-duplicates, 0.1% verbatim MATH-500 copies) and `per-sample`
traces each (verdicts, flags, token counts and ~400-character texts), written straight as
Parquet parts (DuckDB makes the traces). Then, for each size given, each step in a child process
so peak RSS is its own; the peak RSS printed is the child's plus each of its own children's (the
sample checks' worker processes), polled: an upper bound, as they need not peak together.

- ceiling: DuckDB reading every trace column of the same Parquet parts (`SELECT ... FROM traces`);
- filter, first run: rule rewards for every trace, image phashes, exact + near-duplicate dedup,
  13-gram decontamination against MATH-500, tau = 3, every decision written;
- filter, second run: the same again, with what the first run left reused (rewards, phashes,
  the sample checks, and the decisions themselves, copied under the new run's id:
  `r1v_data.stages.filter_cache`);
- filter at tau 4: a re-filter on what the first run left (rewards and sample checks reused),
  whose decisions are computed and written anew;
- dedup step alone (sizes up to --dedup-up-to): r1v's MinHash LSH and datasketch's MinHash +
  MinHashLSH on the same questions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATH500 = REPO.parent / "shared" / "data" / "text_math" / "math500_test.jsonl"
NOUNS = ["triangle", "circle", "square", "sequence", "polynomial", "integer", "angle", "rectangle", "prism"]
VERBS = ["Find", "Compute", "Determine", "Evaluate"]


def question(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 99)
    noun, other = rng.choice(NOUNS), rng.choice(NOUNS)
    extra = " ".join(
        rng.choice([*NOUNS, "the", "of", "and", "is", "with", "each"]) for _ in range(rng.randint(5, 25))
    )
    return (f"A {noun} has sides {a} and {b}, and a {other} inside it has area {c}. {extra}. "
            f"{rng.choice(VERBS)} the {rng.choice(['area', 'perimeter', 'sum', 'ratio'])} of the {noun}.")  # fmt: skip


def build(store: Path, n_traces: int, per_sample: int, image_every: int, seed: int = 0) -> None:
    from r1v_data.store import Store, utcnow

    rng = random.Random(seed)
    n_samples = n_traces // per_sample
    math500 = [json.loads(x)["problem"] for x in MATH500.read_text().splitlines()] if MATH500.exists() else []
    questions: list[str] = []
    for i in range(n_samples):
        r = rng.random()
        if i > 100 and r < 0.03:  # a near-duplicate of an earlier question: one word changed
            words = questions[rng.randrange(i)].split()
            words[rng.randrange(len(words))] = "zebra"
            questions.append(" ".join(words))
        elif math500 and r < 0.031:
            questions.append(rng.choice(math500))
        else:
            questions.append(question(rng))
    now = utcnow()
    with Store.open(store, write=True, create=True) as s:
        run = s.begin_run("bench")
        for lo in range(0, n_samples, 50_000):  # a part at a time: 2M sample rows at once would cost GBs
            rows = [
                _sample(i, questions[i], image_every, run, now)
                for i in range(lo, min(n_samples, lo + 50_000))
            ]
            s.write_part("samples", rows, run, lo // 50_000)
        for lo in range(0, n_traces, 500_000):  # DuckDB makes the trace rows: 20M in a minute or two
            s.write_part(
                "traces",
                _traces(lo, min(n_traces, lo + 500_000), per_sample, run, now),
                run,
                1000 + lo // 500_000,
            )
        s.finish_run(run, "ok", {}, {"command": "bench"})


def _sample(i: int, q: str, image_every: int, run: str, now: object) -> dict[str, object]:
    import io

    from PIL import Image

    images = []
    if i % image_every == 0:
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(buf, "PNG")
        images = [{"bytes": buf.getvalue(), "format": "PNG", "width": 64, "height": 48, "sha256": f"{i:064x}",
                   "path": None}]  # fmt: skip
    return {"sample_id": f"{i:032x}", "source": "synthetic", "question": q, "options": [],
            "answer": str(i % 97), "images": images, "run_id": run, "created_at": now}  # fmt: skip


_TRACES = """
SELECT printf('r%031x', k) AS request_id, printf('%032x', k // $per) AS sample_id, 'synthetic-teacher' AS teacher,
       1 AS round, (k % $per)::INT AS sample_index, 'r1v-prompt/1' AS prompt_version,
       repeat(printf('Let me compute step %d of the problem carefully. ', k % 50), 4) AS think,
       think || printf('</think>\n\\boxed{%d}', k % 97) AS text, (k % 97)::VARCHAR AS answer,
       CASE WHEN k % 41 = 0 THEN 'length' ELSE 'stop' END AS finish_reason, (200 + k % 700)::INT AS completion_tokens,
       k % 41 <> 0 AS think_closed, k % 41 = 0 AS truncated, k % 53 = 0 AS repetition,
       ['correct', 'wrong', 'wrong', 'correct', 'correct'][k % 5 + 1] AS verdict, 'generated' AS provenance,
       {'max_tokens': 1024, 'temperature': 0.6::DOUBLE} AS sampling, $run AS run_id, $now::TIMESTAMPTZ AS created_at
FROM range($lo, $hi) r(k)"""


def _traces(lo: int, hi: int, per_sample: int, run: str, now: object) -> object:
    """Traces lo..hi of the synthetic store: verdicts, flags and token counts cycle with the index."""
    import duckdb

    params = {"lo": lo, "hi": hi, "per": per_sample, "run": run, "now": now}
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con.sql(_TRACES, params=params).to_arrow_table()


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux keeps that across exec, so a child started
    by a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (the sample checks' workers, and anything they start)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])  # after the command name, which may hold spaces
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


class ChildPeaks:
    """Polls the peak RSS (VmHWM) of every process below this one and keeps each one's last
    value: their sum, added to this process's own peak, is the step's peak RSS (an upper bound:
    the processes need not peak at the same moment). Finding them reads every process's stat
    (~8 ms), so that is done once a second; the ones found are read 5 times a second."""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        known: list[int] = []
        tick = 0
        while not self._stop.wait(0.2):
            if tick % 5 == 0:
                known = _descendants(os.getpid())
            tick += 1
            for pid in known:
                if (peak := _vm_hwm(pid)) is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return sorted(self.peaks.values(), reverse=True)


def _vm_hwm(pid: int) -> float | None:
    """A process's peak RSS in MB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(x.split()[1]) / 1024 for x in status.splitlines() if x.startswith("VmHWM:")), None)


def child(what: str, store: Path) -> None:
    """One measured step, run in its own process; prints one JSON line."""
    children = ChildPeaks() if Path("/proc/self/status").exists() else None
    start = time.perf_counter()
    out: dict[str, object] = {}
    if what == "scan":
        import duckdb

        glob = str(store / "traces" / "*.parquet")
        row = duckdb.sql(f"SELECT count(*), sum(length(text)), sum(length(think)), count(DISTINCT sample_id), "
                         f"sum(completion_tokens), count(verdict) FROM read_parquet('{glob}')").fetchall()[0]  # fmt: skip
        out["rows"] = row[0]
    elif what in ("filter", "filter-tau4"):
        from r1v_data.config import FilterConfig
        from r1v_data.stages.filter import run_filter

        specs = [str(MATH500)] if MATH500.exists() else []
        tau = 4 if what == "filter-tau4" else 3
        r = run_filter(FilterConfig(store=store, min_score=tau, decontaminate=specs))
        reused = [k for k in ("rewards", "sample_checks", "decisions") if getattr(r, f"{k}_from")]
        out.update(rows=r.traces, kept=r.kept, dropped=dict(r.dropped), samples_dropped=dict(r.samples_dropped),
                   reused=reused)  # fmt: skip
    elif what in ("dedup", "datasketch"):
        from r1v_data.store import Store

        questions = [
            r[0] for r in Store.open(store).query("SELECT question FROM samples ORDER BY sample_id")[1]
        ]
        start = time.perf_counter()
        out["rows"], out["pairs"] = len(questions), (_ours if what == "dedup" else _datasketch)(questions)
    out["seconds"] = time.perf_counter() - start
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_s"] = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime  # with the workers'
    out["workers_rss_mb"] = children.stop() if children else []
    out["peak_rss_mb"] = peak_rss_mb() + sum(out["workers_rss_mb"])
    print(json.dumps(out))


def _ours(questions: list[str]) -> int:
    from r1v_data.curation.dedup import near_duplicates

    return sum(kept is not None for kept, _ in near_duplicates(questions, threshold=0.8))


def _datasketch(questions: list[str]) -> int:
    from datasketch import MinHash, MinHashLSH

    def shingles(text: str) -> set[bytes]:
        w = text.lower().split()
        return {" ".join(w[i : i + 5]).encode() for i in range(max(1, len(w) - 4))}

    sigs = MinHash.bulk((shingles(q) for q in questions), num_perm=128, seed=1)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    with lsh.insertion_session() as session:
        for i, m in enumerate(sigs):
            session.insert(i, m)
    return sum(1 for i, m in enumerate(sigs) for j in lsh.query(m) if j > i)


def measure(what: str, store: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", what, "--store", str(store)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--per-sample", type=int, default=10)
    ap.add_argument("--image-every", type=int, default=10)
    ap.add_argument("--dedup-up-to", type=int, default=1_000_000,
                    help="compare the dedup step with datasketch only up to this many traces")  # fmt: skip
    ap.add_argument(
        "--built", type=Path, help="keep the synthetic stores here and reuse them on the next run"
    )
    ap.add_argument("--child", choices=["scan", "filter", "filter-tau4", "dedup", "datasketch"])
    ap.add_argument("--store", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.store)
        return
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for n in args.traces:
        with tempfile.TemporaryDirectory() as tmp:
            one_size(Path(tmp) / "store", n, args)


def one_size(store: Path, n: int, args: argparse.Namespace) -> None:
    built = args.built and args.built / f"store-{n}"
    start = time.perf_counter()
    if built and not (built / ".built").exists():  # kept for the next run: 20M takes minutes to make
        build(built, n, args.per_sample, args.image_every)
        (built / ".built").touch()
    if built:
        shutil.copytree(built, store)
    else:
        build(store, n, args.per_sample, args.image_every)
    print(f"# {n:,} traces over {n // args.per_sample:,} samples ready in {time.perf_counter() - start:.0f} s",
          flush=True)  # fmt: skip
    steps = [
        ("DuckDB scan (ceiling)", "scan"),
        ("filter, first run", "filter"),
        ("filter, cached rewards", "filter"),
        ("filter, cached, tau 4", "filter-tau4"),
    ]
    if n <= args.dedup_up_to:
        steps += [("dedup step: r1v", "dedup"), ("dedup step: datasketch", "datasketch")]
    results = {}
    for label, what in steps:
        r = results[label] = measure(what, store)
        if "error" in r:
            print(f"{label:<26} failed: {r['error']}", flush=True)
            continue
        workers = r.get("workers_rss_mb") or []
        split = (
            f" ({r['peak_rss_mb'] - sum(workers):.0f} + {len(workers)} workers {sum(workers):.0f})"
            if workers
            else ""
        )
        print(f"{label:<26} {r['rows']:>11,} rows {r['seconds']:>7.1f} s {r['rows'] / r['seconds']:>11,.0f} rows/s "
              f"{r.get('cpu_s', 0):>7.1f} CPU-s peak RSS {r['peak_rss_mb']:>6.0f} MB{split}", flush=True)  # fmt: skip
        if what.startswith("filter"):
            print(f"{'':<26} kept {r['kept']:,}; traces dropped {r['dropped']}; samples {r['samples_dropped']}; "
                  f"reused {r['reused'] or 'nothing'}")  # fmt: skip
    scan = results["DuckDB scan (ceiling)"]
    for label in ("filter, first run", "filter, cached rewards", "filter, cached, tau 4"):
        r = results[label]
        if "error" not in r and "error" not in scan:
            print(f"{label} / DuckDB scan: {scan['seconds'] / r['seconds']:.3f}x the ceiling's rows/s "
                  f"({scan['cpu_s'] / r['cpu_s']:.3f}x by CPU time, which load on the machine moves less)")  # fmt: skip
    ours, peer = results.get("dedup step: r1v"), results.get("dedup step: datasketch")
    if ours and peer and "error" not in ours and "error" not in peer:
        print(f"dedup step: r1v {peer['seconds'] / ours['seconds']:.1f}x faster than datasketch "
              f"({ours['pairs']:,} duplicates found vs {peer['pairs']:,} unverified LSH pairs)")  # fmt: skip


if __name__ == "__main__":
    main()
