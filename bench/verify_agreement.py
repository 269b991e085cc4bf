"""How often r1v's grading agrees with known verdicts, beside raw math-verify, and how fast it is.

    python bench/verify_agreement.py [--data ../shared/data] [--workers N] [--skip-throughput]

r1v's grading is what `import-traces` does to a completion: `parse_completion` (knowing the
problem's options) then the `VerifierPool`. Raw math-verify is math-verify as its README uses it,
`verify(parse(f"${gold}$"), parse(text))` on the whole completion (it extracts the answer itself).

1. The answer-format corpus (tests/fixtures/answer_formats.jsonl, cases written for every
   extraction and verification rule, each with its expected verdict): agreement per rule group.
2. MATH-Vision testmini outputs of three models (304 each) against their shipped `correct`
   labels; every disagreement is listed, with the option the reference names.
3. "Never worse than math-verify": MATH-500's answers written six ways (as given, 5 as 5.0, another
   problem's answer, `x = A`, `A units`, `=A`). In every section the pairs where raw math-verify, given
   r1v's extracted answer, calls it equal and r1v does not are listed.
4. Throughput on whole responses: MATH-500 solutions against their answers (correct), the same
   solutions with the boxed answer made wrong as the peer anchor `bench_verify.py` makes wrong
   answers (n+1, a+1 over b, another problem's answer), the two together (from the same two
   timings), and the MATH-Vision responses. r1v (parse +
   pool, cheap rules in this process, math-verify in workers) beside raw math-verify (parse the
   gold as `$gold$`, parse the response, verify) in one thread, in the same run.
5. Parse times of hostile texts (`"\\boxed{" * N`, 16,000 `<answer>` tags) at 7, 28 and 112 KB,
   beside a real solution text of the same size: linear, where they once took 0.8 s, 12 s and
   149 s (issue 14).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from r1v_data.grading.numbers import parse_number
from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify import VERIFIER_NAME, Verdict, VerifyRequest
from r1v_data.grading.verify_pool import VerifierPool

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "fixtures" / "answer_formats.jsonl"
MODELS = ("gemini-pro-cot", "internlm-xc2-vl-cot", "qwen-vl-max-cot")


def default_data() -> Path:
    shared = os.environ.get("R1V_SHARED")
    return Path(shared) / "data" if shared else REPO.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Case:
    """One completion to grade: the problem, the text, and the verdict it should get."""

    def __init__(self, text: str, ref: str, options: list[str], expected: bool, group: str = ""):
        self.text, self.ref, self.options, self.expected, self.group = text, ref, options, expected, group
        self.answer_type = "multiple_choice" if options else None

    def request(self) -> VerifyRequest:
        parsed = parse_completion(self.text, options=self.options, answer_type=self.answer_type)
        return VerifyRequest(parsed.answer, self.ref, self.answer_type, self.options or None)


def corpus_cases(path: Path) -> list[Case]:
    """The fixture's problems as ingest stores them: options parsed, option texts as letters."""
    from r1v_data import text

    cases = []
    for row in read_jsonl(path):
        options = text.parse_options(row.get("options"))
        ref = text.answer_to_text(row["answer"]) or ""
        ref = (text.match_option_letter(ref, options) if options else None) or ref
        cases.append(Case(row["response"], ref, options, row["correct"], row["rule"].split(":")[0]))
    return cases


def mathvision_cases(data: Path, model: str) -> tuple[list[Case], list[dict]]:
    problems = {p["id"]: p for p in read_jsonl(data / "mathv_testmini" / "testmini.jsonl")}
    rows = read_jsonl(data / "mathv_testmini" / f"outputs_{model}_testmini.jsonl")
    cases = [
        Case(r["response"], problems[r["id"]]["answer"], problems[r["id"]]["options"], bool(r["correct"]))
        for r in rows
    ]
    return cases, rows


# ----------------------------------------------------------------------------- raw math-verify
def raw_equal(ref: str, text: str | None) -> bool:
    """math-verify on its own, as its README uses it: the reference in $…$, the text as it is."""
    from math_verify import parse, verify

    return bool(text) and verify(parse(f"${ref}$"), parse(text))


# ----------------------------------------------------------------------------- agreement
def share(hits: list[bool]) -> float:
    return sum(hits) / max(len(hits), 1)


def grade(cases: list[Case], pool: VerifierPool) -> tuple[list[VerifyRequest], list[Verdict], list[bool]]:
    """r1v's request and verdict for each case, and raw math-verify's verdict on the whole text."""
    requests = [c.request() for c in cases]
    return requests, pool.verify_many(requests), [raw_equal(c.ref, c.text) for c in cases]


def worse_than_math_verify(where: str, requests: list[VerifyRequest], verdicts: list[Verdict]) -> list[str]:
    """The pairs raw math-verify, given r1v's extracted answer, calls equal and r1v does not."""
    return [
        f"{where} #{i}: answer {req.pred!r} ref {req.ref!r} -> r1v {v.verdict} ({v.detail})"
        for i, (req, v) in enumerate(zip(requests, verdicts, strict=True))
        if not v.correct and raw_equal(req.ref or "", req.pred)
    ]


def print_list(title: str, lines: list[str]) -> None:
    print(f"\n### {title} ({len(lines)})")
    for line in lines:
        print(f"  {line}")


def corpus_section(path: Path, pool: VerifierPool) -> None:
    cases = corpus_cases(path)
    requests, verdicts, raw = grade(cases, pool)
    ours = [v.correct == c.expected for v, c in zip(verdicts, cases, strict=True)]
    theirs = [r == c.expected for r, c in zip(raw, cases, strict=True)]
    print(f"\n## answer-format corpus: {len(cases)} cases ({path.name}), agreement with the expected verdict")
    print(f"{'rule group':<22} {'n':>4} {'r1v':>7} {'raw math-verify':>16}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        groups[case.group].append(i)
    for group, idx in [*sorted(groups.items()), ("all", list(range(len(cases))))]:
        r1v, mv = share([ours[i] for i in idx]), share([theirs[i] for i in idx])
        print(f"{group:<22} {len(idx):>4} {r1v:>7.3f} {mv:>16.3f}")
    print_list("r1v disagrees with the expected verdict", [
        f"{c.group}: answer {req.pred!r} ref {req.ref!r} -> {v.verdict} ({v.detail})"
        for c, req, v, ok in zip(cases, requests, verdicts, ours, strict=True) if not ok
    ])  # fmt: skip
    print_list("raw math-verify calls r1v's extracted answer equal, r1v does not",
               worse_than_math_verify("corpus", requests, verdicts))  # fmt: skip


def mathvision_section(data: Path, pool: VerifierPool) -> None:
    print("\n## MATH-Vision testmini: agreement with the shipped correctness labels")
    print(f"{'model':<22} {'n':>4} {'r1v':>7} {'raw math-verify':>16} {'r1v acc':>8} {'label acc':>9}")
    listed, worse = [], []
    for model in MODELS:
        cases, rows = mathvision_cases(data, model)
        requests, verdicts, raw = grade(cases, pool)
        ours, labels = [v.correct for v in verdicts], [c.expected for c in cases]
        agree = share([o == lab for o, lab in zip(ours, labels, strict=True)])
        raw_agree = share([r == lab for r, lab in zip(raw, labels, strict=True)])
        print(
            f"{model:<22} {len(cases):>4} {agree:>7.3f} {raw_agree:>16.3f} {share(ours):>8.3f} {share(labels):>9.3f}"
        )
        listed += [
            f"{model} id {row['id']}: answer {req.pred!r} ref {req.ref!r}{_option_text(req)} -> r1v {v.verdict}"
            f" ({v.detail}), label {lab}; ...{' '.join(row['response'].split())[-70:]!r}"
            for row, req, v, lab in zip(rows, requests, verdicts, labels, strict=True) if v.correct != lab
        ]  # fmt: skip
        worse += worse_than_math_verify(model, requests, verdicts)
    print_list("every disagreement with the labels", listed)
    print_list("raw math-verify calls r1v's extracted answer equal, r1v does not", worse)


def _option_text(req: VerifyRequest) -> str:
    options, ref = req.options or (), req.ref or ""
    if len(ref) == 1 and "A" <= ref < chr(ord("A") + len(options)):
        return f" (option {ref}: {options[ord(ref) - ord('A')]!r})"
    return ""


def never_worse_section(data: Path, pool: VerifierPool) -> None:
    """MATH-500's answers written six ways, each against the answer as given."""
    golds = [r["answer"] for r in read_jsonl(data / "text_math" / "math500_test.jsonl")]
    requests = [
        VerifyRequest(form, gold)
        for i, gold in enumerate(golds)
        for form in (
            gold,
            equivalent(gold),
            golds[(i + 7) % len(golds)],
            f"x = {gold}",
            f"{gold} units",
            f"={gold}",
        )
        if form
    ]
    print(f"\n## MATH-500 answers in six forms: {len(requests)} pairs")
    print_list("raw math-verify calls them equal, r1v does not",
               worse_than_math_verify("MATH-500", requests, pool.verify_many(requests)))  # fmt: skip


def equivalent(gold: str) -> str | None:
    """Another way to write a plain number: 5 -> 5.0, \\frac{3}{4} -> 3/4."""
    value = parse_number(gold)
    if value is None:
        return None
    return f"{value.numerator}.0" if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# ----------------------------------------------------------------------------- throughput
def wrong_answer(golds: list[str], i: int) -> str:
    """A wrong answer as the peer anchor (bench_verify.py) makes one: n -> n+1, \\frac{a}{b} ->
    \\frac{a+1}{b}, else the next answer of another problem that reads differently."""
    gold = golds[i].strip()
    if gold.lstrip("-").isdigit():
        return str(int(gold) + 1)
    if m := re.fullmatch(r"(-?)\\d?frac\{(\d+)\}\{(\d+)\}", gold):
        return f"{m.group(1)}\\frac{{{int(m.group(2)) + 1}}}{{{m.group(3)}}}"
    others = (golds[(i + k * 7) % len(golds)] for k in range(1, len(golds)))
    return next(o for o in others if o.replace(" ", "") != gold.replace(" ", ""))


def with_boxed(solution: str, answer: str) -> str:
    """The solution with the content of its last \\boxed{...} replaced."""
    from r1v_data.grading.answers import find_boxed

    old = find_boxed(solution)
    if old is None:
        return f"{solution}\n\\boxed{{{answer}}}"
    at = solution.rfind(f"\\boxed{{{old}}}")
    return f"{solution[:at]}\\boxed{{{answer}}}{solution[at + len(old) + 8 :]}"


def throughput_cases(data: Path) -> dict[str, list[Case]]:
    math500 = read_jsonl(data / "text_math" / "math500_test.jsonl")
    golds = [r["answer"] for r in math500]
    wrong = [
        Case(with_boxed(r["solution"], wrong_answer(golds, i)), r["answer"], [], False)
        for i, r in enumerate(math500)
    ]
    return {
        "MATH-500 solutions (correct)": [Case(r["solution"], r["answer"], [], True) for r in math500],
        "MATH-500 solutions, answer made wrong": wrong,
        "MATH-Vision responses (3 models)": [c for model in MODELS for c in mathvision_cases(data, model)[0]],
    }


def throughput(data: Path, workers: int | None) -> None:
    print("\n## throughput on whole responses (parse + verify), r1v beside raw math-verify, same run")
    print(f"{'workload':<44} {'n':>5} {'r1v/s':>8} {'raw mv/s':>9} {'ratio':>6} {'r1v ok':>7} {'raw ok':>7}")
    with VerifierPool(workers=workers) as pool:
        pool.verify("x^2", "x \\cdot x")  # math-verify's: starts the workers (not part of the figures)
        rows = {name: _timed_workload(cases, pool) for name, cases in throughput_cases(data).items()}
        # Right and wrong long solutions together, from the two timings (not a third run, which
        # would meet warm caches on both sides).
        long = [rows["MATH-500 solutions (correct)"], rows["MATH-500 solutions, answer made wrong"]]
        rows["MATH-500 solutions, right and wrong"] = tuple(map(sum, zip(*long, strict=True)))
        for name, (n, ours_s, raw_s, ok, raw_ok) in rows.items():
            print(f"{name:<44} {n:>5} {n / ours_s:>8,.0f} {n / raw_s:>9,.0f} {raw_s / ours_s:>6.1f} "
                  f"{ok / n:>7.3f} {raw_ok / n:>7.3f}")  # fmt: skip
        print(f"  ({pool.n_workers} verifier workers; raw math-verify in one thread)")


def _timed_workload(cases: list[Case], pool: VerifierPool) -> tuple[int, float, float, int, int]:
    """(pairs, r1v seconds, raw math-verify seconds, r1v as expected, raw as expected)."""
    from math_verify import parse, verify

    t0 = time.perf_counter()
    verdicts = pool.verify_many([c.request() for c in cases])
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = [verify(parse(f"${c.ref}$"), parse(c.text)) for c in cases]
    raw_s = time.perf_counter() - t0
    ok = sum(v.correct == c.expected for v, c in zip(verdicts, cases, strict=True))
    raw_ok = sum(r == c.expected for r, c in zip(raw, cases, strict=True))
    return len(cases), ours_s, raw_s, ok, raw_ok


def parse_times(data: Path) -> None:
    text = (data / "text_math" / "math500_test.jsonl").read_text()
    print("\n## parse_completion on hostile texts (best of 3), beside prose of the same size")
    print(f"{'size':>7} {'prose ms':>9} {'boxed{ ms':>10} {'<answer> ms':>12}")
    for size in (7_000, 28_000, 112_000):
        times = [
            min(_timed(lambda t=t: parse_completion(t)) for _ in range(3))
            for t in (text[:size], ("\\boxed{" * size)[:size], ("<answer>" * size)[:size])
        ]
        print(f"{size:>7,} {times[0] * 1e3:>9.1f} {times[1] * 1e3:>10.1f} {times[2] * 1e3:>12.1f}")


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="the shared data directory")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="the answer-format corpus (JSONL)")
    ap.add_argument("--workers", type=int, default=None, help="verifier processes (default: CPUs)")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every timeout it handles
    print(f"# verifier {VERIFIER_NAME} | data {args.data} | CPUs {os.cpu_count()}")
    with VerifierPool(workers=args.workers) as pool:
        corpus_section(args.corpus, pool)
        mathvision_section(args.data, pool)
        never_worse_section(args.data, pool)
    if not args.skip_throughput:
        throughput(args.data, args.workers)
    parse_times(args.data)


if __name__ == "__main__":
    main()
