"""DRLC against a fixed repetition penalty: the same problems, the same teacher, twice.

    python bench/adaptive_length.py [--teacher builtin] [--source builtin:sample] [--max-tokens 256]

Ingests the source into a scratch store, scores it with the local QDAM/VTIA estimators, then
generates one trace per problem with (a) a fixed repetition penalty of 1.0 and (b) DRLC's
per-sample penalty (`--adaptive-length`). Prints mean and median completion tokens and accuracy
for both, over all problems and over the easier and harder halves by DRLC's combined score. The
paper's claim: shorter traces on easy problems, equal accuracy. The builtin teacher is a weak
270M base model on CPU: its accuracy is near zero either way; a real claim needs a real
reasoning teacher (e.g. --teacher vllm:Qwen/QwQ-32B on a GPU machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from r1v_data.alcotd import drlc
from r1v_data.backends import make_backend
from r1v_data.config import GenerateConfig, IngestConfig, SamplingConfig, ScoreConfig
from r1v_data.stages.generate import run_generate
from r1v_data.stages.ingest import run_ingest
from r1v_data.stages.score import run_score
from r1v_data.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="builtin")
    ap.add_argument("--teacher-option", action="append", default=[], help="KEY=VALUE, e.g. batch_size=20")
    ap.add_argument("--source", default="builtin:sample")
    ap.add_argument("--limit", type=int, default=None, help="at most this many problems")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--store", type=Path, default=None, help="scratch store (default: a temp dir)")
    args = ap.parse_args()
    options = dict(_option(o) for o in args.teacher_option) or (
        {"batch_size": 20} if args.teacher == "builtin" else {}
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        run_ingest(IngestConfig(store=store, sources=[args.source], limit=args.limit))
        run_score(ScoreConfig(store=store))
        backend = make_backend(args.teacher, **options)
        try:
            runs = {}
            for label, adaptive in (("fixed P=1.0", False), ("DRLC", True)):
                cfg = GenerateConfig(
                    store=store,
                    teacher=args.teacher,
                    adaptive_length=adaptive,
                    limit=args.limit,
                    sampling=SamplingConfig(max_tokens=args.max_tokens, repetition_penalty=1.0),
                )
                start = time.perf_counter()
                runs[label] = run_generate(cfg, backend=backend).run_id
                print(f"# {label}: generated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        finally:
            backend.close()
        report(store, runs)


def _option(item: str) -> tuple[str, object]:
    import yaml

    key, _, value = item.partition("=")
    return key, yaml.safe_load(value)


def report(store: Path, runs: dict[str, str]) -> None:
    s = Store.open(store)
    ids = s.sample_ids()
    controls, _ = drlc.controls(s, ids, ScoreConfig(store=store).drlc)
    median_score = statistics.median(c.score for c in controls.values())
    print(f"{len(ids)} problems; DRLC penalty {min(c.penalty for c in controls.values()):.3f}"
          f"-{max(c.penalty for c in controls.values()):.3f}; halves split at combined score {median_score:.3f}")  # fmt: skip
    print(f"{'mode':<12} {'problems':<19} {'mean P':>6} {'mean tok':>9} {'median tok':>11} {'accuracy':>9}")
    for label, run_id in runs.items():
        _, rows = s.query(
            "SELECT sample_id, sampling.repetition_penalty, completion_tokens, verdict = 'correct' "
            "FROM traces WHERE run_id = ? AND error IS NULL AND finish_reason <> 'refused'",
            params=[run_id],
        )
        halves = {
            "all": rows,
            "easier half": [r for r in rows if controls[r[0]].score <= median_score],
            "harder half": [r for r in rows if controls[r[0]].score > median_score],
        }
        for part, subset in halves.items():
            if not subset:
                continue
            tokens = [r[2] or 0 for r in subset]
            print(
                f"{label:<12} {part:<12} n={len(subset):<4} {statistics.fmean(r[1] for r in subset):>6.3f} "
                f"{statistics.fmean(tokens):>9.1f} {statistics.median(tokens):>11.1f} "
                f"{sum(bool(r[3]) for r in subset) / len(subset):>9.3f}"
            )


if __name__ == "__main__":  # the verifier pool's workers import this module
    main()
