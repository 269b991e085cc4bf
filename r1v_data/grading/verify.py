"""Check a predicted final answer against a reference answer, with a named, versioned verdict.

Cheap rules run in the calling process, in this order; the first that applies decides:

1. No answer is wrong; no reference is "unverifiable".
2. Multiple choice (the problem has options, or its answer type says so): the letters the answer
   names must be exactly the reference's: `(B)`, `b.`, `Option B`, `B) 12`, or the option's own
   text (`120^\\circ` for option D "$120^{\\circ}$", numbers compared by value) all name B; a
   reference of several letters (`C, D`, `C\\nD`, `CD`) needs all of them and no other (`C` alone
   and `C, D, E` are wrong). A reference that names no option is judged by the rules below.
3. Numbers (`numbers.parse_number`): units, words, thousands separators, a variable name, degrees,
   fractions and ratios understood, relative tolerance 1e-6; a percentage matches the same figure
   or its fraction (`45%` = `45` = `0.45`).
4. Clock times: `2:35 PM` = `2:35 P.M.` = `14:35`; `2:35` matches either half of the day. Here
   r1v is stricter than math-verify on purpose: math-verify reads `2:35 PM` and `2:50 PM` both as
   the number 2 and calls them equal.
5. Yes/no and true/false.
6. Equal normalised strings (case, spaces, `\\text{}`, `\\dfrac`).
7. Closed-form values (`values.latex_value`: fractions, roots, powers, π): values further apart
   than 1e-6 (relative) are wrong, values equal to 1e-12 are correct; in between, and for
   anything with a variable, a set, an interval or text, math-verify decides. A number against
   a tuple, an interval, a list of several values, a matrix or words is wrong
   (`values.not_one_number`), and so is a number against an expression in one-letter variables
   that takes two values (`4` against `2k+2`, `values.varies`; `x - x`, `a^0` and `5 m`, which
   math-verify reads as a unit, go to math-verify). math-verify reaches the same verdicts on
   these pairs, at a thousand times the cost.

Everything else (LaTeX expressions, sets, intervals, equations) goes to math-verify in worker
processes with a hard per-call timeout: see `verify_pool.VerifierPool`. An answer reaches it as
one LaTeX expression (in `$…$`, a leading `=` dropped): math-verify given a bare `2k` reads it as
text and picks out the 2, calling it equal to `2`; r1v does not follow it there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal, NamedTuple

from r1v_data.grading.answers import answer_letters
from r1v_data.grading.numbers import parse_number, parse_quantity, parse_time, same_number, same_time
from r1v_data.grading.values import latex_value, not_one_number, variables_in, varies
from r1v_data.text import LETTERS

__all__ = [
    "MAX_ANSWER_CHARS",
    "VERIFIER_NAME",
    "Verdict",
    "VerifyRequest",
    "cheap_verdict",
    "parse_number",
]

# Bump RULES_VERSION whenever a rule changes what it accepts: verdicts from different rule sets
# must not be mixed up in a store.
RULES_VERSION = 2
VERIFIER_NAME = f"r1v-verify/{RULES_VERSION}+math-verify-{version('math-verify')}"
# A final answer longer than this is a paragraph, not an answer: it is compared as a string but
# never handed to math-verify, whose parse of a long text can take seconds.
MAX_ANSWER_CHARS = 2000

VerdictKind = Literal["correct", "wrong", "unverifiable", "error", "timeout"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification, stamped with the verifier that produced it."""

    verdict: VerdictKind
    verifier: str = VERIFIER_NAME
    detail: str | None = None

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


class VerifyRequest(NamedTuple):
    """One (prediction, reference) pair; plain tuples and dicts with these keys work too."""

    pred: str | None
    ref: str | None
    answer_type: str | None = None
    options: Sequence[str] | None = None


_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def _normalise(text: str) -> str:
    s = text.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)]
    s = _TEXT_WRAPPER.sub(r"\1", s.lower().replace("\\left", "").replace("\\right", ""))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\,", "")
    return re.sub(r"\s+", "", s).rstrip(".")


def _boolean(text: str) -> bool | None:
    words = re.findall(r"[a-z]+", _normalise(text[:200]))
    if not words:
        return None
    return True if words[0] in _TRUE else False if words[0] in _FALSE else None


# ----------------------------------------------------------------------------- multiple choice
def _letters(answer: str, options: Sequence[str], n: int) -> frozenset[str] | None:
    """The option letters an answer names: an option's exact text first (an option may read
    "CD"), then letters, then the one option of the same value ("0.25" for "$\\frac{1}{4}$")."""
    norm = _normalise(answer)
    exact = [LETTERS[i] for i, opt in enumerate(options) if _normalise(opt) == norm]
    if len(exact) == 1:
        return frozenset(exact)
    letters = answer_letters(answer, n)
    if letters:
        return frozenset(letters)
    value = parse_number(answer)
    same = [LETTERS[i] for i, opt in enumerate(options) if value is not None and parse_number(opt) == value]
    return frozenset(same) if len(same) == 1 else None


def _choice_verdict(pred: str, ref: str, options: Sequence[str]) -> Verdict | None:
    n = len(options) or 26
    expected = _letters(ref, options, n)
    if expected is None:
        return None  # the reference is not a letter: judge the value instead
    picked = _letters(pred, options, n)
    want = ", ".join(sorted(expected))
    if picked is None:
        return Verdict("wrong", detail=f"names no option (expected {want})")
    if picked == expected:
        return Verdict("correct", detail="option letter")
    return Verdict("wrong", detail=f"option {', '.join(sorted(picked))}, expected {want}")


# ----------------------------------------------------------------------------- the rules
def cheap_verdict(
    pred: str | None,
    ref: str | None,
    answer_type: str | None = None,
    options: Sequence[str] | None = None,
) -> Verdict | None:
    """Judge by the rules that need no math-verify; None when math-verify must decide."""
    if pred is None or not pred.strip():
        return Verdict("wrong", detail="no answer")
    if ref is None or not ref.strip():
        return Verdict("unverifiable", detail="no reference answer")
    if answer_type == "multiple_choice" or options:
        verdict = _choice_verdict(pred, ref, options or ())
        if verdict is not None:
            return verdict
    for rule in (_numeric_verdict, _time_verdict, _boolean_verdict):
        verdict = rule(pred, ref)
        if verdict is not None:
            return verdict
    if _normalise(pred) == _normalise(ref):
        return Verdict("correct", detail="exact")
    verdict = _value_verdict(pred, ref)
    if verdict is not None:
        return verdict
    if len(pred) > MAX_ANSWER_CHARS:
        return Verdict("wrong", detail=f"a {len(pred)}-character answer is no final answer")
    return None


def _numeric_verdict(pred: str, ref: str) -> Verdict | None:
    ref_number = parse_quantity(ref)
    pred_number = parse_quantity(pred) if ref_number is not None else None
    if pred_number is None:
        return None
    return Verdict("correct" if same_number(pred_number, ref_number) else "wrong", detail="numeric")


def _time_verdict(pred: str, ref: str) -> Verdict | None:
    ref_time = parse_time(ref)
    pred_time = parse_time(pred) if ref_time is not None else None
    if pred_time is None:
        return None
    return Verdict("correct" if same_time(pred_time, ref_time) else "wrong", detail="clock time")


_DIFFERENT, _SAME = 1e-6, 1e-12  # relative; math-verify rounds floats to 6 decimals


def _value_verdict(pred: str, ref: str) -> Verdict | None:
    ref_value, pred_value = latex_value(ref), latex_value(pred)
    if ref_value is None or pred_value is None:
        return _number_against_other(pred, ref)
    scale = max(1.0, abs(ref_value), abs(pred_value))
    gap = abs(pred_value - ref_value)
    if gap > _DIFFERENT * scale:
        return Verdict("wrong", detail="value")
    if gap <= _SAME * scale and scale < 1e12:  # beyond, floats no longer tell integers apart
        return Verdict("correct", detail="value")
    return None


def _number_against_other(pred: str, ref: str) -> Verdict | None:
    """Pairs where one side at least is no closed form: `\\sqrt{51}` against `90^\\circ` (a number
    whatever the reading, as math-verify reads degrees), or a number against what never is one."""
    readings = [_readings(side) for side in (pred, ref)]
    if all(readings):
        apart = all(
            abs(a - b) > _DIFFERENT * max(1.0, abs(a), abs(b)) for a in readings[0] for b in readings[1]
        )
        return Verdict("wrong", detail="value") if apart else None
    if not any(readings):
        return None
    other = ref if readings[0] else pred
    if what := not_one_number(other):
        return Verdict("wrong", detail=f"a number against {what}")
    if varies(other):
        return Verdict("wrong", detail="a number against an expression in a variable")
    return None


def _readings(text: str) -> list[float]:
    """The values a side may mean: its closed form, or its quantity (a percentage also over 100);
    none when it is no number. "3x" is none, though parse_quantity reads 3 and a unit: it may
    equal "x + 2x"."""
    if (value := latex_value(text)) is not None:
        return [value]
    quantity = parse_quantity(text) if not variables_in(text) else None
    if quantity is None or abs(quantity.value) > 1e300:  # beyond, no float holds it
        return []
    value = float(quantity.value)
    return [value, value / 100] if quantity.percent else [value]


def _boolean_verdict(pred: str, ref: str) -> Verdict | None:
    ref_bool = _boolean(ref)
    if ref_bool is None or parse_number(ref) is not None:
        return None
    ok = _boolean(pred) is ref_bool
    return Verdict("correct" if ok else "wrong", detail="yes/no")
