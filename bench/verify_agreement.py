"""How often r1v's verifier agrees with the correctness labels shipped with MATH-Vision outputs.

    python bench/verify_agreement.py [--data ../shared/data] [--workers N] [--examples 4]

For each of the three MATH-Vision testmini model outputs (Gemini-Pro, InternLM-XComposer2-VL,
Qwen-VL-Max; 304 problems each), the `response` is parsed with `parse_completion` and the
extracted answer is verified against testmini's reference (multiple choice when the problem
has options). The table gives the agreement of our verdict with the shipped `correct` label,
both accuracies, and the disagreements by kind. The same is repeated with the dataset's own
`model_answer` as the prediction, which separates our extraction from our verification.

Then verifications/s on MATH-500 answers (each against itself and against a perturbed answer):
the VerifierPool (cheap rules in-process, math-verify in workers) beside raw math-verify
(parse + parse + verify) in one thread, in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify import VERIFIER_NAME, Verdict, VerifyRequest
from r1v_data.grading.verify_pool import VerifierPool

REPO = Path(__file__).resolve().parents[1]
MODELS = ("gemini-pro-cot", "internlm-xc2-vl-cot", "qwen-vl-max-cot")


def default_data() -> Path:
    shared = os.environ.get("R1V_SHARED")
    return Path(shared) / "data" if shared else REPO.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def requests_for(rows: list[dict], problems: dict, use_model_answer: bool) -> list[VerifyRequest]:
    out = []
    for row in rows:
        problem = problems[row["id"]]
        pred = row["model_answer"] if use_model_answer else parse_completion(row["response"]).answer
        mc = "multiple_choice" if problem["options"] else None
        out.append(VerifyRequest(pred or None, problem["answer"], mc, problem["options"] or None))
    return out


def kind(verdict: Verdict, label: bool) -> str:
    ours = verdict.verdict
    if ours == "correct":
        return "we: correct, label: wrong"
    return f"we: {ours} ({(verdict.detail or '').split(' (')[0].split(',')[0]}), label: correct"


def report(name: str, rows: list[dict], reqs: list[VerifyRequest], verdicts: list[Verdict], k: int):
    labels = [bool(r["correct"]) for r in rows]
    ours = [v.verdict == "correct" for v in verdicts]
    agree = sum(o == lab for o, lab in zip(ours, labels, strict=True))
    n = len(rows)
    print(f"{name:<24} {n:>4} {agree / n:>9.3f} {sum(ours) / n:>8.3f} {sum(labels) / n:>8.3f} {n - agree:>6}")
    kinds = Counter(kind(v, lab) for v, o, lab in zip(verdicts, ours, labels, strict=True) if o != lab)
    for what, count in kinds.most_common():
        print(f"{'':<26}{count:>4}  {what}")
    shown = 0
    for row, req, v, o, lab in zip(rows, reqs, verdicts, ours, labels, strict=True):
        if o != lab and shown < k:
            shown += 1
            tail = " ".join(row["response"].split())[-90:]
            print(
                f"{'':<28}id {row['id']}: pred {req.pred!r} ref {req.ref!r}"
                f" options {len(req.options or ())} -> {v.verdict} ({v.detail}); label {lab};"
                f" model_answer {row['model_answer']!r}; response ...{tail!r}"
            )


def agreement(data: Path, pool: VerifierPool, examples: int) -> None:
    problems = {p["id"]: p for p in read_jsonl(data / "mathv_testmini" / "testmini.jsonl")}
    for use_model_answer in (False, True):
        source = "their model_answer" if use_model_answer else "parse_completion(response)"
        print(f"\n## prediction = {source}")
        print(f"{'model':<24} {'n':>4} {'agreement':>9} {'our acc':>8} {'lab acc':>8} {'disagr':>6}")
        for model in MODELS:
            rows = read_jsonl(data / "mathv_testmini" / f"outputs_{model}_testmini.jsonl")
            reqs = requests_for(rows, problems, use_model_answer)
            report(model, rows, reqs, pool.verify_many(reqs), examples)


def perturb(answer: str) -> str:
    a = answer.strip()
    if a.lstrip("-").isdigit():
        return str(int(a) + 1)
    return f"{a}+1"


def throughput(data: Path, workers: int | None) -> None:
    answers = [r["answer"] for r in read_jsonl(data / "text_math" / "math500_test.jsonl")]
    items = [VerifyRequest(a, a) for a in answers] + [VerifyRequest(perturb(a), a) for a in answers]
    expected = [True] * len(answers) + [False] * len(answers)
    print(f"\n## throughput: {len(items)} MATH-500 pairs (each answer vs itself, vs a perturbed one)")
    with VerifierPool(workers=workers) as pool:
        t0 = time.perf_counter()
        pool.verify("\\sqrt{2}", "2^{1/2}")  # start the workers (not part of the figure)
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdicts = pool.verify_many(items)
        pool_s = time.perf_counter() - t0
        # The same pool on only the pairs that needed math-verify: the worker path alone (IPC).
        hard = [r for r, v in zip(items, verdicts, strict=True) if v.detail == "math-verify"]
        t0 = time.perf_counter()
        pool.verify_many(hard)
        hard_s = time.perf_counter() - t0
        n_workers = pool.n_workers
    counts = Counter(v.verdict for v in verdicts)
    by_rule = Counter("math-verify" if v.detail == "math-verify" else "cheap rules" for v in verdicts)
    right = sum((v.verdict == "correct") == e for v, e in zip(verdicts, expected, strict=True))
    raw_s, raw_right = raw_math_verify(items, expected)
    hard_raw_s, _ = raw_math_verify(hard, None)
    print(
        f"  VerifierPool, {n_workers} workers : {len(items) / pool_s:8,.0f} verifications/s"
        f"  ({pool_s:.2f} s; worker start {start:.2f} s, not counted; {dict(by_rule)};"
        f" verdicts {dict(counts)}; as expected {right}/{len(items)})"
    )
    print(
        f"  raw math-verify, 1 thread: {len(items) / raw_s:8,.0f} verifications/s"
        f"  ({raw_s:.2f} s; as expected {raw_right}/{len(items)})"
    )
    print(
        f"  only the {len(hard)} pairs that reach math-verify: pool {len(hard) / hard_s:,.0f}/s,"
        f" raw math-verify 1 thread {len(hard) / hard_raw_s:,.0f}/s"
    )


def raw_math_verify(items: list[VerifyRequest], expected: list[bool] | None) -> tuple[float, int]:
    """Seconds for parse(gold) + parse(pred) + verify over `items`, and how many as expected."""
    from math_verify import parse, verify

    t0 = time.perf_counter()
    raw = [verify(parse(f"${r.ref}$"), parse(f"${r.pred}$")) for r in items]
    seconds = time.perf_counter() - t0
    return seconds, sum(ok == e for ok, e in zip(raw, expected or raw, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="the shared data directory")
    ap.add_argument("--workers", type=int, default=None, help="verifier processes (default: CPUs)")
    ap.add_argument("--examples", type=int, default=4, help="disagreements shown per model")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every timeout it handles
    print(f"# verifier {VERIFIER_NAME} | data {args.data} | CPUs {os.cpu_count()}")
    with VerifierPool(workers=args.workers) as pool:
        agreement(args.data, pool, args.examples)
    if not args.skip_throughput:
        throughput(args.data, args.workers)


if __name__ == "__main__":
    main()
