"""Near-duplicate detection: r1v's numpy MinHash LSH vs datasketch, same corpus, same run.

    python bench/dedup.py [--n 100000] [--words 300] [--only r1v|datasketch]

The corpus is the anchors' (`../shared/anchors/bench_dedup.py`, imported, not copied): N synthetic
CoT-like documents (~1.65k characters), 10% of them planted duplicates of distinct sources, 1/4
case/whitespace variants ("norm") and 3/4 with 0.2-2% of the words edited ("edit").

datasketch runs exactly as the anchor runs it (`MinHash.bulk`, num_perm=128, `MinHashLSH`
threshold 0.8 with insertion_session, one query per document, word 5-gram shingles); r1v runs
`minhash_signatures` + `similar_pairs` (LSH candidates verified on the signatures) + `keep_first`
with the same parameters, then the one call `near_duplicates()` that does all three (and settles
identical signatures without LSH), which must reach the same decisions. "End to end" is signatures + index + query for both, without building
the corpus. Quality is measured against the planted pairs and against the exact Jaccard of
the anchor's shingles, as the anchor does. Peak RSS is the growth of the process's peak resident
memory during each engine's run (Linux /proc/self/clear_refs), beside the whole process's peak.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
BUCKETS = ((0.0, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01))


def load_anchor() -> Any:
    if not (ANCHORS / "bench_dedup.py").is_file():
        sys.exit(f"the anchors' corpus generator is not at {ANCHORS / 'bench_dedup.py'}")
    sys.path.insert(0, str(ANCHORS))
    import bench_dedup

    return bench_dedup


def rss_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> float | None:
    """Reset the kernel's peak-RSS mark to the current RSS; the RSS now, or None if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return rss_mib("VmRSS")


def peak_growth(start: float | None) -> str:
    peak = rss_mib("VmHWM")
    return "n/a" if start is None or peak is None else f"{peak - start:,.0f} MiB"


def quality(pairs: set[tuple[int, int]], docs: list[str], planted: dict, anchor: Any, args: Any) -> dict:
    """The anchor's quality figures for a set of found pairs (i < j)."""
    cache: dict[int, set] = {}

    def sh(i: int) -> set:
        if i not in cache:
            cache[i] = anchor.shingles(docs[i], args.ngram)
        return cache[i]

    cand_j = {p: anchor.jaccard(sh(p[0]), sh(p[1])) for p in pairs}
    pl_j = {p: anchor.jaccard(sh(p[0]), sh(p[1])) for p in planted}
    above = [p for p, j in pl_j.items() if j >= args.threshold]
    tp = sum(1 for p in pairs if p in planted)
    out: dict[str, Any] = {
        "candidates": len(pairs),
        "planted": len(planted),
        "recall_planted": tp / max(1, len(planted)),
        "precision_planted": tp / max(1, len(pairs)),
    }
    for kind in ("norm", "edit"):
        ps = [p for p, k in planted.items() if k == kind]
        out[f"recall_{kind}"] = sum(1 for p in ps if p in pairs) / max(1, len(ps))
    out["planted_J>=thr"] = len(above)
    out["recall_J>=thr"] = sum(1 for p in above if p in pairs) / max(1, len(above))
    out["precision_J>=thr"] = sum(1 for j in cand_j.values() if j >= args.threshold) / max(1, len(pairs))
    out["accidental_true_pairs"] = sum(
        1 for p, j in cand_j.items() if p not in planted and j >= args.threshold
    )
    out["planted_J_min/median"] = (min(pl_j.values()), statistics.median(pl_j.values()))
    for lo, hi in BUCKETS:
        ps = [p for p, j in pl_j.items() if lo <= j < hi]
        found = sum(1 for p in ps if p in pairs) / max(1, len(ps))
        out[f"recall J in [{lo:.2f},{min(hi, 1):.2f}{')' if hi <= 1 else ']'}"] = f"{found:.3f} (n={len(ps)})"
    return out


def bench_r1v(docs: list[str], planted: dict, anchor: Any, args: Any) -> dict:
    from r1v_data.curation.dedup import keep_first, near_duplicates
    from r1v_data.curation.minhash import candidate_pairs, lsh_params, minhash_signatures, similar_pairs

    n = len(docs)
    start = reset_peak()
    t0 = time.perf_counter()
    sig = minhash_signatures(docs, num_perm=args.num_perm, ngram=args.ngram, seed=1)
    t_sig = time.perf_counter() - t0
    t0 = time.perf_counter()
    left, right, _est = similar_pairs(sig, threshold=args.threshold)
    t_lsh = time.perf_counter() - t0
    t0 = time.perf_counter()
    decisions = keep_first(n, left, right, _est)
    t_keep = time.perf_counter() - t0
    peak = peak_growth(start)
    raw = len(candidate_pairs(sig, threshold=args.threshold)[0])  # untimed: for the record only
    del sig
    t0 = time.perf_counter()
    api = near_duplicates(docs, threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    t_api = time.perf_counter() - t0
    assert api == decisions, "near_duplicates() and the steps above disagree"
    bands, rows = lsh_params(args.threshold, args.num_perm)
    out: dict[str, Any] = {
        "lsh_bands_x_rows": f"{bands}x{rows}",
        "signature_s": t_sig,
        "lsh_candidates+verify_s": t_lsh,
        "keep_first_s": t_keep,
        "signature_docs_per_s": n / t_sig,
        "lsh+verify_docs_per_s": n / t_lsh,
        "end_to_end_docs_per_s": n / (t_sig + t_lsh),
        "with_keep_first_docs_per_s": n / (t_sig + t_lsh + t_keep),
        "near_duplicates()_docs_per_s": n / t_api,
        "lsh_candidates_unverified": raw,
        "dropped_as_duplicates": sum(1 for target, _ in decisions if target is not None),
        "peak_rss_growth": peak,
    }
    pairs = set(zip(left.tolist(), right.tolist(), strict=True))
    return out | quality(pairs, docs, planted, anchor, args)


def bench_datasketch(docs: list[str], planted: dict, anchor: Any, args: Any) -> dict | None:
    try:
        import datasketch  # noqa: F401
    except ImportError:
        print(
            "\n## datasketch is not installed, so there is nothing to compare with:"
            "\n   pip install datasketch   (or: pip install -e '.[dev]')  and run this again"
        )
        return None
    start = reset_peak()
    out = anchor.bench_minhash(docs, planted, argparse.Namespace(**vars(args), bulk=True))
    out["peak_rss_growth"] = peak_growth(start)  # includes the anchor's untimed quality pass
    return out


def show(title: str, r: dict) -> None:
    print(f"\n## {title}")
    for k, v in r.items():
        if isinstance(v, float):
            v = f"{v:,.4f}" if v < 10 else f"{v:,.1f}"
        elif isinstance(v, tuple):
            v = " / ".join(f"{x:.3f}" for x in v)
        print(f"  {k:<28} {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--words", type=int, default=300, help="mean words per doc (0.6x-1.4x)")
    ap.add_argument("--dup-frac", type=float, default=0.10)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["r1v", "datasketch"], default=None)
    args = ap.parse_args()
    anchor = load_anchor()

    t0 = time.perf_counter()
    docs, planted = anchor.build_corpus(args.n, args.words, args.dup_frac, args.seed)
    t_gen = time.perf_counter() - t0
    print(
        f"# near-dup detection | python {platform.python_version()} numpy {np.__version__} | "
        f"N={args.n} avg_chars={sum(map(len, docs)) / len(docs):.0f} planted={len(planted)} "
        f"seed={args.seed} (corpus built in {t_gen:.1f}s)"
    )
    ours = theirs = None
    if args.only in (None, "r1v"):
        ours = bench_r1v(docs, planted, anchor, vars_ns(args))
        show(f"r1v minhash (num_perm={args.num_perm}, t={args.threshold}), word {args.ngram}-grams", ours)
    if args.only in (None, "datasketch"):
        theirs = bench_datasketch(docs, planted, anchor, vars_ns(args))
        if theirs is not None:
            version = theirs.pop("version")
            show(
                f"datasketch {version} MinHash(num_perm={args.num_perm}, bulk) + "
                f"MinHashLSH(t={args.threshold}), word {args.ngram}-grams",
                theirs,
            )
    if ours and theirs:
        print("\n## r1v vs datasketch (same corpus, same run)")
        speedup = ours["end_to_end_docs_per_s"] / theirs["end_to_end_docs_per_s"]
        print(f"  {'speedup end to end':<28} {speedup:.1f}x")
        for key in ("recall_planted", "precision_planted", "recall_norm", "recall_edit", "recall_J>=thr"):
            print(f"  {key:<28} {ours[key]:.4f} vs {theirs[key]:.4f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n  {'process peak RSS':<28} {peak:,.0f} MiB (corpus and both engines)")


def vars_ns(args: argparse.Namespace) -> argparse.Namespace:
    """The anchor reads args.ngram, num_perm, threshold; `only` is ours and means nothing there."""
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "only"})


if __name__ == "__main__":
    main()
