"""The filter's sample checks (dedup + decontamination) at 1M and 10M samples: seconds,
samples/s and peak RSS, beside the in-memory path they replace and datasketch, in one run.

    python bench/sample_checks.py [--samples 1000000 10000000] [--image-every 10] [--baseline-max 1000000]

Each size gets a scratch store of seeded synthetic problems from `bench/filter.py`'s `question()`
(imported), written straight as Parquet parts: 3% planted near-duplicates (one word changed, of
one of the previous 100,000 questions), 0.1% verbatim MATH-500 copies, every `image-every`-th
sample with a small PNG. The images' phashes are cached in the scores table as a first filter
run leaves them (hashing 1M images is the image decoder's time, not the checks'). Then, each in
a child process so that its peak RSS (VmHWM) is its own:

- r1v streamed: `sample_checks.sample_drops` (exact, near-duplicate with images and answers,
  13-gram decontamination against MATH-500), what `filter` runs;
- r1v in-memory: `load_candidates` + `find_duplicates` + `find_contamination`, the path before
  (up to `--baseline-max` samples);
- datasketch: MinHash + MinHashLSH on the same questions (`bench/filter.py --child datasketch`,
  text near-duplicates only; up to `--baseline-max` samples).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

BENCH = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_filter", BENCH / "filter.py")
bench_filter = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench_filter)  # type: ignore[union-attr]
MATH500 = bench_filter.MATH500
CHUNK = 100_000


def _questions(n: int, rng: random.Random, math500: list[str]):  # type: ignore[no-untyped-def]
    recent: deque[str] = deque(maxlen=100_000)
    for i in range(n):
        r = rng.random()
        if i > 100 and r < 0.03:  # a near-duplicate of an earlier question: one word changed
            words = recent[rng.randrange(len(recent))].split()
            words[rng.randrange(len(words))] = "zebra"
            q = " ".join(words)
        elif math500 and r < 0.031:
            q = rng.choice(math500)
        else:
            q = bench_filter.question(rng)
        recent.append(q)
        yield q


def _images() -> tuple[list[bytes], list[str]]:
    """The 256 distinct PNGs bench/filter.py's colours cycle through, and their cached phash detail."""
    from PIL import Image

    from r1v_data.curation.phash import phash64

    pngs, details = [], []
    for i in range(256):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(buf, "PNG")
        pngs.append(buf.getvalue())
        h = phash64(pngs[-1])
        details.append(str(h - (1 << 64) if h >= 1 << 63 else h))
    return pngs, details


def build(store: Path, n: int, image_every: int, seed: int = 0) -> None:
    import pyarrow as pa

    from r1v_data.curation.phash import PHASH_VERSION
    from r1v_data.curation.sample_scan import PHASH_SCORER
    from r1v_data.store import Store, utcnow

    rng = random.Random(seed)
    math500 = [json.loads(x)["problem"] for x in MATH500.read_text().splitlines()] if MATH500.exists() else []
    pngs, details = _images()
    now = utcnow()
    questions = _questions(n, rng, math500)
    with Store.open(store, write=True, create=True) as s:
        run = s.begin_run("bench")
        for lo in range(0, n, CHUNK):
            ids = range(lo, min(n, lo + CHUNK))
            images = [[{"bytes": pngs[i % 256], "format": "PNG", "width": 64, "height": 48,
                        "sha256": f"{i:064x}", "path": None}] if i % image_every == 0 else [] for i in ids]  # fmt: skip
            s.write_part("samples", pa.table({"sample_id": [f"{i:032x}" for i in ids], "source": ["synthetic"] * len(ids),
                                     "question": [next(questions) for _ in ids], "options": [[]] * len(ids),
                                     "answer": [str(i % 97) for i in ids], "images": images,
                                     "run_id": [run] * len(ids), "created_at": [now] * len(ids)}), run, lo // CHUNK)  # fmt: skip
            with_images = [i for i in ids if i % image_every == 0]
            s.write_part("scores", [{"sample_id": f"{i:032x}", "request_id": None, "scorer": PHASH_SCORER,
                                     "version": PHASH_VERSION, "name": "image_phash", "value": 1.0,
                                     "detail": details[i % 256], "run_id": run, "created_at": now}
                                    for i in with_images], run, 1_000_000 + lo // CHUNK)  # fmt: skip
        s.finish_run(run, "ok", {}, {"command": "bench"})


def child(what: str, store: Path) -> None:
    """One measured step in its own process; prints one JSON line."""
    from r1v_data.curation import sample_checks as sc
    from r1v_data.curation.decontam import load_benchmark
    from r1v_data.store import Store

    benchmarks = [load_benchmark(str(MATH500))] if MATH500.exists() else []
    start = time.perf_counter()
    with Store.open(store, write=True) as s:
        run = s.begin_run("bench-checks")
        with s.writer("scores", run) as writer:
            if what == "streamed":
                reasons = sc.sample_drops(s, writer, benchmarks=benchmarks).column("reason").to_pylist()
            else:
                c = sc.load_candidates(s, writer)
                drops = sc.find_duplicates(c)
                gone = {d.sample_id for d in drops}
                drops += [d for d in sc.find_contamination(c, benchmarks) if d.sample_id not in gone]
                reasons = [d.reason for d in drops]
        s.finish_run(run, "ok", {}, {"command": "bench-checks"})
    kinds: dict[str, int] = {}
    for r in reasons:
        kind = r.split(":")[0] if r.startswith("contamination") else r.split("(")[1].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    out = {"seconds": time.perf_counter() - start, "peak_rss_mb": bench_filter.peak_rss_mb(), "drops": kinds}
    print(json.dumps(out))


def measure(args: list[str]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(label: str, n: int, r: dict[str, object]) -> None:
    if "error" in r:
        print(f"{label:<34} {n:>11,} failed: {r['error']}", flush=True)
        return
    secs = float(r["seconds"])  # type: ignore[arg-type]
    print(f"{label:<34} {n:>11,} {secs:>8.1f} s {n / secs:>10,.0f} samples/s peak RSS {r['peak_rss_mb']:>7,.0f} MB"
          f"  load {os.getloadavg()[0]:.1f}  {r.get('drops', r.get('pairs', ''))}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--image-every", type=int, default=10)
    ap.add_argument("--baseline-max", type=int, default=1_000_000)
    ap.add_argument("--child", choices=["streamed", "in-memory"])
    ap.add_argument("--store", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.store)
        return
    print(f"{'':<34} {'samples':>11} {'time':>10} {'rate':>20} {'':>8} {'peak':>10}", flush=True)
    for n in args.samples:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            start = time.perf_counter()
            build(store, n, args.image_every)
            print(f"# {n:,} samples built in {time.perf_counter() - start:.0f} s", flush=True)
            report(
                "r1v streamed (sample_drops)",
                n,
                measure([__file__, "--child", "streamed", "--store", str(store)]),
            )
            if n > args.baseline_max:
                print(f"{'r1v in-memory, datasketch':<34} {n:>11,} not run: over --baseline-max", flush=True)
                continue
            report(
                "r1v in-memory (before)",
                n,
                measure([__file__, "--child", "in-memory", "--store", str(store)]),
            )
            filter_py = str(BENCH / "filter.py")
            report(
                "datasketch MinHash+LSH (text)",
                n,
                measure([filter_py, "--child", "datasketch", "--store", str(store)]),
            )


if __name__ == "__main__":
    main()
