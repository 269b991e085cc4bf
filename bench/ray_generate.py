"""`generate --executor local` vs `--executor ray` on the same requests and the same server.

    python bench/ray_generate.py [--n-per-problem 100] [--latency-ms 200] [--concurrency 32] [--actors 2]

A local OpenAI-compatible server with a fixed latency (tests/servers/fake_openai.py, in a child
process) answers the bundled sample's problems, `--n-per-problem` samples each, into fresh copies
of one store: (a) in this process; (b) on a local Ray cluster (started once, outside the timings)
with `--actors` actors, each running r1v's openai: client at the same concurrency (more requests
in flight, as more clients would have on a cluster); (c) the same actors sharing the local run's
concurrency (the same requests in flight). Prints requests/s of each and the ratio to local; the
traces of every run are checked to be the same. A Ray run pays a fixed start (the actor pool's
processes start and import r1v, each builds its backend): a Ray run over one problem, after a
warm-up, measures it, and "after start" is the rate without it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fake server

from servers.fake_openai import FakeOpenAIProcess  # noqa: E402

from r1v_data.config import GenerateConfig, IngestConfig  # noqa: E402
from r1v_data.stages.generate import run_generate  # noqa: E402
from r1v_data.stages.ingest import run_ingest  # noqa: E402
from r1v_data.store import Store  # noqa: E402


def traces(store: Path) -> set[tuple]:
    con = Store.open(store).connect()
    try:
        return set(con.sql("SELECT request_id, text, verdict FROM traces").fetchall())
    finally:
        con.close()


def timed(
    store: Path, teacher: str, n: int, concurrency: int, executor: dict, limit: int | None = None
) -> float:
    """Seconds of one generate run (all its requests sent, none failed)."""
    cfg = GenerateConfig(store=store, teacher=teacher, n=n, teacher_options={"concurrency": concurrency},
                         executor=executor, limit=limit)  # fmt: skip
    start = time.perf_counter()
    result = run_generate(cfg)
    seconds = time.perf_counter() - start
    assert result.sent == result.requests and not result.failed, result.as_dict()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-problem", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=args.cpus, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    with tempfile.TemporaryDirectory(prefix="r1v-bench-ray-") as tmp:
        base = Path(tmp) / "base"
        run_ingest(IngestConfig(store=base, sources=["builtin:sample"]))
        stores = {name: Path(tmp) / name for name in ("local", "ray", "ray-shared", "warm-1", "warm-2")}
        for store in stores.values():
            shutil.copytree(base, store)
        ray_cfg = {"kind": "ray", "actors": args.actors, "block_size": args.block_size}
        shared = max(1, args.concurrency // args.actors)
        with FakeOpenAIProcess(latency_s=args.latency_ms / 1000) as srv:
            teacher, n = f"openai:{srv.url}#m", args.n_per_problem
            timed(stores["warm-1"], teacher, 1, args.concurrency, ray_cfg, limit=1)  # Ray's first workers
            start_s = timed(stores["warm-2"], teacher, 1, args.concurrency, ray_cfg, limit=1)
            seconds = {
                "local": timed(stores["local"], teacher, n, args.concurrency, {"kind": "local"}),
                "ray": timed(stores["ray"], teacher, n, args.concurrency, ray_cfg),
                "ray-shared": timed(stores["ray-shared"], teacher, n, shared, ray_cfg),
            }
        runs = ("local", "ray", "ray-shared")
        same = {name: traces(stores[name]) == traces(stores["local"]) for name in runs}
    requests = 38 * args.n_per_problem
    rates = {name: requests / s for name, s in seconds.items()}
    steady = {name: requests / (s - (0 if name == "local" else start_s)) for name, s in seconds.items()}
    print(f"{requests} requests, server latency {args.latency_ms:g} ms, {args.cpus} CPUs; "
          f"a Ray run's fixed start: {start_s:.1f} s")  # fmt: skip
    labels = {
        "local": f"local, concurrency {args.concurrency}",
        "ray": f"ray, {args.actors} actors x concurrency {args.concurrency}",
        "ray-shared": f"ray, {args.actors} actors x concurrency {shared}",
    }
    for name, rate in rates.items():
        print(f"{labels[name]:38} {rate:7.1f} req/s (ratio {rate / rates['local']:.2f})   after start "
              f"{steady[name]:7.1f} req/s (ratio {steady[name] / rates['local']:.2f})   "
              f"same traces as local: {same[name]}")  # fmt: skip


if __name__ == "__main__":
    main()
