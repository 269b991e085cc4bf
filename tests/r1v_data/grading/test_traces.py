"""Trace parsing on real model outputs: the R1-V eval logs and the MATH-Vision CoT outputs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA as SHARED

from r1v_data.grading.traces import answer_letter, is_repetitive, parse_completion
from r1v_data.grading.verify import parse_number

LOGS = SHARED / "traces" / "r1v_eval_logs"
GEO_GRPO = "geoqa_test_qwen2vl_7b_grpo_2epochs_legacy.json"
GEO_INSTRUCT = "geoqa_test_qwen2vl_7b_instruct_legacy.json"
CLEVR_INSTRUCT = "counting_results_superclevr_200_qwen2vl_2b_instruct_legacy.json"
CLEVR_GRPO = "counting_results_superclevr_200_qwen2vl_2b_instruct_grpo100_legacy.json"
MODELS = ("gemini-pro-cot", "internlm-xc2-vl-cot", "qwen-vl-max-cot")


def _log(name: str) -> list[dict]:
    if not LOGS.is_dir():
        pytest.skip(f"the shared data is not at {SHARED} (set R1V_SHARED)")
    return json.loads((LOGS / name).read_text())["results"]


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        pytest.skip(f"the shared data is not at {SHARED} (set R1V_SHARED)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same_answer(ours: str, theirs: str) -> bool:
    """The log stores sympy's rendering (40.0000000000000, 4/3.0, 2.0**2): compare values."""
    a, b = parse_number(ours), parse_number(theirs)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1, abs(b))
    return ours.replace(" ", "") == theirs.replace("**", "^").replace(" ", "")


def _flat(s: str) -> str:
    s = re.sub(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}", r"\1", s)
    return re.sub(r"[\s$]", "", s.lower())


# --------------------------------------------------------------------------- think tags
@pytest.mark.parametrize(
    ("name", "opened", "closed"),
    [
        (GEO_GRPO, 754, 742),
        (GEO_INSTRUCT, 693, 661),
        (CLEVR_INSTRUCT, 200, 178),
        (CLEVR_GRPO, 0, 0),
    ],
)
def test_think_tag_counts_match_the_logs_documentation(name: str, opened: int, closed: int) -> None:
    parsed = [parse_completion(r["model_output"]) for r in _log(name)]
    assert sum(p.has_think for p in parsed) == opened  # figures from r1v_eval_logs/SOURCE.md
    assert sum(p.think_closed for p in parsed) == closed
    # Finish reasons are not in the logs: an opened, never closed think is read as truncation.
    assert sum(p.truncated for p in parsed) >= opened - closed


def test_a_prefix_that_opened_think_puts_the_completion_inside_it() -> None:
    prefix = "<think>\n"
    closed = parse_completion("First, 2+3=5.\n</think>\nThe answer is $5$.", assistant_prefix=prefix)
    assert (closed.think, closed.answer, closed.answer_source) == (
        "First, 2+3=5.",
        "5",
        "answer_phrase",
    )
    assert closed.has_think and closed.think_closed and not closed.truncated
    # A model that writes the tag again anyway gets no "<think>" inside its think text.
    again = parse_completion("<think>Hmm.</think>\\boxed{x^{2}}", assistant_prefix=prefix)
    assert (again.think, again.answer) == ("Hmm.", "x^{2}")
    cut = parse_completion("Let me see, 12 and then", "length", assistant_prefix=prefix)
    assert cut.has_think and not cut.think_closed and cut.truncated
    assert (cut.answer, cut.answer_source) == ("12", "last_number")  # found, and flagged
    stopped = parse_completion("Let me see", "stop", assistant_prefix=prefix)
    assert not stopped.truncated and not stopped.think_closed
    plain = parse_completion("Let me see", "stop")
    assert not plain.has_think and plain.think is None


def test_only_the_text_after_a_closed_think_is_searched() -> None:
    p = parse_completion("<think>maybe \\boxed{3}, or 4</think>So it is 7.")
    assert (p.answer, p.answer_source) == ("7", "last_number")
    none = parse_completion("<think>the answer is 3</think>")
    assert none.answer is None and none.answer_source is None


def test_extraction_rules_in_order() -> None:
    cases = {
        "<answer> 4 </answer>": ("4", "answer_tag"),
        "<answer>so \\boxed{\\frac{1}{2}}</answer>": ("\\frac{1}{2}", "answer_tag"),
        "x \\boxed{1} then \\boxed{\\frac{a}{b+\\{c\\}}}.": ("\\frac{a}{b+\\{c\\}}", "boxed"),
        "\\fbox{12}": ("12", "boxed"),
        "unbalanced \\boxed{3 so the answer is 3.": ("3", "answer_phrase"),
        "Answer: $\\sqrt{2}$.\nThanks": ("\\sqrt{2}", "answer_phrase"),
        "The final answer is **12**. Done.": ("12", "answer_phrase"),
        "there are 3 cats and 4 dogs": ("4", "last_number"),
        "a total of 1,234 apples": ("1,234", "last_number"),
        "no idea": (None, None),
    }
    for text, expected in cases.items():
        p = parse_completion(text)
        assert (p.answer, p.answer_source) == expected, text
    # An option letter is an answer only when the problem has options.
    letters = {"Comparing the pictures...\n(B)": ("B", None), "so we pick\nC. 12 cm": ("C", "12")}
    for text, (with_options, free_form) in letters.items():
        assert parse_completion(text, options=["1", "2", "3"]).answer == with_options, text
        assert parse_completion(text, answer_type="multiple_choice").answer == with_options, text
        assert parse_completion(text).answer == free_form, text


def test_answer_letter() -> None:
    for text in ("B", "(B)", "b.", "Option B", "B) 12", "**B**", "$\\boxed{B}$", "\\text{(B)}"):
        assert answer_letter(text, 5) == "B", text
    for text in ("a cat", "12", "", "F", "None of these"):
        assert answer_letter(text, 5) is None, text
    assert answer_letter("F", 6) == "F"


# --------------------------------------------------------------------------- answers
@pytest.mark.parametrize("name", [CLEVR_INSTRUCT, CLEVR_GRPO])
def test_counting_answers_equal_the_logs_extraction(name: str) -> None:
    # R1-V's counting eval reads `<answer>\s*(\d+)\s*</answer>` and stores None otherwise.
    rows = [r for r in _log(name) if r["extracted_answer"] is not None]
    assert rows
    for r in rows:
        p = parse_completion(r["model_output"])
        assert (p.answer, p.answer_source) == (str(r["extracted_answer"]), "answer_tag")


@pytest.mark.parametrize(("name", "floor"), [(GEO_GRPO, 0.98), (GEO_INSTRUCT, 0.92)])
def test_geoqa_answers_mostly_equal_the_logs_extraction(name: str, floor: float) -> None:
    """R1-V stored math-verify's first parse of the *whole* output, not the <answer> tag.

    Measured: 703/715 (GRPO) and 654/701 (instruct) numeric answers agree. The rest were
    inspected: the model's <answer> says one thing and math-verify picked a number out of the
    reasoning (tag 131 after "= 130°", tag 0.8 after "= 0{0:0{4/5}}"), so the log is wrong.
    """
    rows = [r for r in _log(name) if r["extracted_answer"] is not None]
    numeric = [
        (p, r)
        for r in rows
        if (p := parse_completion(r["model_output"])).answer is not None
        and parse_number(p.answer) is not None
    ]
    agree = sum(_same_answer(p.answer, str(r["extracted_answer"])) for p, r in numeric)
    assert len(numeric) >= 0.9 * len(rows)
    assert agree / len(numeric) >= floor
    by_tail = {r["model_output"][-60:]: r for r in rows}
    tail = "angle BOC = 2 * angle C = 130°.</think>\n<answer>131</answer>"
    if name == GEO_GRPO:
        row = next(r for t, r in by_tail.items() if t.endswith(tail))
        assert parse_completion(row["model_output"]).answer == "131"
        assert row["extracted_answer"] == "130"  # the log's own extraction misread it


@pytest.mark.parametrize("model", MODELS)
def test_mathvision_answers_mostly_equal_the_shipped_model_answer(model: str) -> None:
    """MATH-Vision's `model_answer` is its own extraction, lower-cased with spaces removed.

    Where it is mangled ("\\frac{1}{4}}.theansweris:\\frac{1}{4", "\\textbf{A}" -> "bfa") it is
    left out. On the rest we measured 0.95 / 0.94 / 0.91 agreement; the misses were inspected:
    mostly answers stated in prose ("Position C.", "Two") that no rule should guess.
    """
    problems = {r["id"]: r for r in _jsonl(SHARED / "mathv_testmini" / "testmini.jsonl")}
    rows = _jsonl(SHARED / "mathv_testmini" / f"outputs_{model}_testmini.jsonl")
    rows = [r for r in rows if "theansweris" not in r["model_answer"] and r["model_answer"][:2] != "bf"]
    agree = 0
    for r in rows:
        options = problems[r["id"]]["options"]
        p, n = parse_completion(r["response"], options=options), len(options)
        ours, theirs = p.answer or "", str(r["model_answer"])
        letter = answer_letter(ours, n) if n else None
        same_letter = letter is not None and letter == answer_letter(theirs, n)
        agree += same_letter or _same_answer(ours, theirs) or _flat(ours) == _flat(theirs)
    assert len(rows) >= 280
    assert agree / len(rows) >= 0.9


# --------------------------------------------------------------------------- repetition
def test_looping_counting_outputs_are_flagged_and_clean_ones_are_not() -> None:
    rows = _log(CLEVR_INSTRUCT)
    parsed = [parse_completion(r["model_output"]) for r in rows]
    loops = [
        p for p, r in zip(parsed, rows, strict=True) if not p.think_closed and len(r["model_output"]) > 200
    ]
    assert len(loops) == 18  # 17 of "A. 6\nB. 5\n…" until the length limit, one prose loop
    assert sum(p.repetition for p in loops) >= 16  # measured 16: the prose loop and one near miss
    assert not any(p.repetition for p in parsed if p.think_closed)


def test_looping_geoqa_outputs_are_flagged_and_clean_grpo_traces_are_not() -> None:
    parsed = [parse_completion(r["model_output"]) for r in _log(GEO_GRPO)]
    truncated = [p for p in parsed if p.truncated]
    assert sum(p.repetition for p in truncated) >= len(truncated) - 1
    assert sum(p.repetition for p in parsed if not p.truncated) <= 1  # one loops, then closes
    instruct = [parse_completion(r["model_output"]) for r in _log(GEO_INSTRUCT)]
    assert 25 <= sum(p.repetition for p in instruct) <= 40


def test_clean_reasoning_text_is_never_flagged() -> None:
    texts = [r["solution"] for r in _jsonl(SHARED / "text_math" / "math500_test.jsonl")]
    texts += [r["answer"] for r in _jsonl(SHARED / "text_math" / "gsm8k_test.jsonl")]
    for model in ("gemini-pro-cot", "qwen-vl-max-cot"):
        path = SHARED / "mathv_testmini" / f"outputs_{model}_testmini.jsonl"
        texts += [r["response"] for r in _jsonl(path)]
    assert len(texts) > 2000
    assert not [t for t in texts if is_repetitive(t)]


def test_repetition_edge_cases() -> None:
    assert not is_repetitive("")
    assert not is_repetitive("0. " * 20)  # too short to call a loop
    assert is_repetitive("Let me think. " + "So x = 2 + 2 = 4. " * 12)
    assert is_repetitive("Therefore 天 " * 60)  # any script


def _repetitive_by_definition(text: str) -> bool:
    """The rule as written: some period p whose last max(2p, 120) bytes agree with the bytes p
    earlier at >= 85% of positions, one period at a time."""
    tail = " ".join(text[-3000:].split()).encode()[-1500:]
    for period in range(1, 401):
        span = max(2 * period, 120)
        if span + period > len(tail):
            return False
        same = sum(a == b for a, b in zip(tail[-span:], tail[-span - period : -period], strict=True))
        if same >= 0.85 * span:
            return True
    return False


def test_the_vectorised_repetition_check_is_the_rule_as_written() -> None:
    """Every period length and tail length, loops with drifts near the 85% line, and prose."""
    rng = random.Random(7)
    prose = [r["solution"] for r in _jsonl(SHARED / "text_math" / "math500_test.jsonl")[:150]]
    texts = []
    for _ in range(300):
        block = "".join(rng.choice("abcdefgh xyz=+1234.") for _ in range(rng.randint(1, 420)))
        loop = list(block * (3000 // len(block) + 3))
        for i in rng.sample(range(len(loop)), k=int(len(loop) * rng.choice([0, 0.05, 0.12, 0.15, 0.2]))):
            loop[i] = rng.choice("QRSTUVW")
        texts.append(rng.choice(prose)[: rng.randint(0, 800)] + "".join(loop)[: rng.randint(50, 3000)])
    flagged = [is_repetitive(t) for t in texts + prose]
    assert flagged == [_repetitive_by_definition(t) for t in texts + prose]
    assert 50 < sum(flagged) < len(texts)  # both sides of the line are exercised


@pytest.mark.parametrize(("changed", "loop"), [(18, True), (19, False)])
def test_a_loop_is_one_at_85_percent_agreement_exactly(changed: int, loop: bool) -> None:
    """Period 60 over the last 180 characters: 102 of 120 agreeing is 85% (a loop), 101 is not."""
    rng = random.Random(changed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    head, block = rng.choices(alphabet, k=600), rng.choices(alphabet, k=60)
    tail = block * 3
    for i in rng.sample(range(120, 180), k=changed):  # the last 60: each changes one comparison
        tail[i] = next(c for c in alphabet if c != tail[i])
    text = "".join(head + tail)
    assert is_repetitive(text) is loop and _repetitive_by_definition(text) is loop
