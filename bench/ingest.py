"""Ingest throughput on N synthetic image samples, beside the bare minimum work in one process.

    python bench/ingest.py [--n 2000] [--size 512x384] [--workers 1,4]

Baseline ("floor of the work"): read each image file, sha256 it and decode it fully with PIL,
single-threaded, no storage: any ingest that validates images does at least this much. Then
`run_ingest` (the code behind `r1v-data ingest`) into a fresh store with each worker count, and a
second pass over the same source (idempotent: hashes and skips). Prints samples/s and MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from r1v_data.config import IngestConfig
from r1v_data.stages.ingest import run_ingest


def make_source(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> int:
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True)
    total = 0
    with open(root / "rows.jsonl", "w") as f:
        for i in range(n):
            im = Image.effect_noise(size, 40).convert("RGB")  # noise: realistic JPEG sizes
            d = ImageDraw.Draw(im)
            for _ in range(6):
                x, y = rng.randrange(size[0]), rng.randrange(size[1])
                d.ellipse((x, y, x + 60, y + 60), fill=tuple(rng.randrange(256) for _ in range(3)))
            path = root / "img" / f"{i}.jpg"
            im.save(path, quality=90)
            total += path.stat().st_size
            f.write(
                json.dumps(
                    {
                        "question": f"Synthetic problem {i}: how many circles?",
                        "image": f"img/{i}.jpg",
                        "answer": "6",
                        "difficulty": 1 + i % 5,
                        "subject": "counting",
                    }
                )
                + "\n"
            )
    return total


def floor_of_the_work(root: Path) -> float:
    start = time.perf_counter()
    for path in sorted((root / "img").iterdir()):
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    return time.perf_counter() - start


def timed_ingest(source: Path, store: Path, workers: int) -> tuple[float, dict]:
    cfg = IngestConfig(
        store=store,
        sources=[str(source)],
        preset="vqa",
        workers=workers,
        mapping={"difficulty": ["difficulty"], "subject": ["subject"]},
    )
    start = time.perf_counter()
    result = run_ingest(cfg)
    return time.perf_counter() - start, result.as_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="r1v-bench-ingest-"))
    try:
        t0 = time.perf_counter()
        total_bytes = make_source(work / "src", args.n, size)  # type: ignore[arg-type]
        mb = total_bytes / 1e6
        print(
            f"source: {args.n} samples, {args.size} JPEG, {mb:.1f} MB of images "
            f"(made in {time.perf_counter() - t0:.1f} s)"
        )
        rows = [("floor: read + sha256 + full decode, 1 thread", floor_of_the_work(work / "src"), None)]
        for w in (int(x) for x in args.workers.split(",")):
            store = work / f"store-{w}"
            seconds, result = timed_ingest(work / "src" / "rows.jsonl", store, w)
            assert result["added"] == args.n, result
            rows.append((f"r1v ingest, {w} worker(s), new store", seconds, result))
            seconds, result = timed_ingest(work / "src" / "rows.jsonl", store, w)
            assert result["added"] == 0 and result["unchanged"] == args.n, result
            rows.append((f"r1v ingest, {w} worker(s), again (adds 0)", seconds, result))
        floor = rows[0][1]
        print(f"{'run':48} {'seconds':>8} {'samples/s':>10} {'MB/s':>8} {'vs floor':>9}")
        for name, seconds, _ in rows:
            print(
                f"{name:48} {seconds:8.2f} {args.n / seconds:10.0f} {mb / seconds:8.1f} {floor / seconds:8.2f}x"
            )
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
