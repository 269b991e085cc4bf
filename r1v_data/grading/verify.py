"""Check a predicted final answer against a reference answer, with a named, versioned verdict.

Cheap rules run in the calling process: option letters for multiple choice, numbers with a
tolerance (units, thousands separators and simple fractions understood), yes/no, and equality of
normalised strings. Everything else (LaTeX expressions, sets, intervals, equations) goes to
math-verify in worker processes with a hard per-call timeout: see `verify_pool.VerifierPool`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib.metadata import version
from typing import Literal, NamedTuple

from r1v_data.grading.traces import answer_letter

__all__ = [
    "VERIFIER_NAME",
    "Verdict",
    "VerifyRequest",
    "cheap_verdict",
    "parse_number",
]

# Bump RULES_VERSION whenever a rule changes what it accepts: verdicts from different rule sets
# must not be mixed up in a store.
RULES_VERSION = 1
VERIFIER_NAME = f"r1v-verify/{RULES_VERSION}+math-verify-{version('math-verify')}"

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


# ----------------------------------------------------------------------------- cheap rules
# Unit words: "cm", "nautical miles", "米"; not one letter ("x", "i"). Words are separated by
# spaces so the pattern cannot backtrack exponentially on a long run of letters.
_UNIT_TAIL = re.compile(
    r"(?:\s*[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*|\s*[\u4e00-\u9fff]+)(?:\^?\{?[23]\}?|[²³])?$"
)
_NOT_UNITS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "cot", "sec", "csc", "exp"}
_MAX_NUMBER_CHARS = 80  # longer text is no plain number; bounds the regex work too
_SYMBOL_UNITS = re.compile(
    r"(?:\^\s*\{?\\circ\}?|\\circ|°|\\%|%|\\(?:text|mathrm)\{[^{}]*\}(?:\^\{?[23]\}?)?)$"
)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?)\\[dt]?frac(\d)(\d)")
_SLASH = re.compile(r"([+-]?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}


@lru_cache(maxsize=1 << 16)  # pure; references repeat n times per problem in generate
def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number, with units and decoration removed, else None.

    Understands "1,234.5", "$12", "45°", "45^\\circ", "12\\%", "3 cm", "\\frac{1}{2}", "-3/4".
    """
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    s = _strip_math(text)
    for _ in range(3):  # "12 \\text{cm}^2", "45^{\\circ}": peel units until none is left
        before = s
        s = _SYMBOL_UNITS.sub("", s).strip()
        unit = _UNIT_TAIL.search(s)
        if unit and unit.start() > 0 and not _NOT_UNITS & set(unit.group().lower().split()):
            s = s[: unit.start()].strip()
        if s == before:
            break
    s = s.lstrip("$").replace("\\$", "").replace("\\!", "").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    if m := _FRAC.fullmatch(s):
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else m.group(4, 5, 6)
        return _ratio(Fraction(num), Fraction(den), sign == "-")
    if m := _SLASH.fullmatch(s.lstrip("+-")):
        return _ratio(Fraction(m.group(1)), Fraction(m.group(2)), s.startswith("-"))
    return None


def _ratio(num: Fraction, den: Fraction, negative: bool) -> Fraction | None:
    if den == 0:
        return None
    return -num / den if negative else num / den


def _strip_math(text: str) -> str:
    s = text.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)].strip()
    return s.replace("\\left", "").replace("\\right", "").replace("\\,", "").replace("~", " ")


def _close(a: Fraction, b: Fraction) -> bool:
    # Relative 1e-6 for ordinary values, absolute 1e-9 so that 0 compares with 1e-12.
    return abs(a - b) <= max(Fraction(1, 10**9), Fraction(1, 10**6) * max(abs(a), abs(b)))


def _normalise(text: str) -> str:
    s = _strip_math(text).lower()
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", s).rstrip(".")


def _boolean(text: str) -> bool | None:
    words = re.findall(r"[a-z]+", _normalise(text))
    if not words:
        return None
    return True if words[0] in _TRUE else False if words[0] in _FALSE else None


def _option_letter(text: str, options: Sequence[str]) -> str | None:
    """The letter of the one option whose text equals `text` (numbers compared by value)."""
    value, norm = parse_number(text), _normalise(text)
    hits = [
        chr(ord("A") + i)
        for i, opt in enumerate(options)
        if _normalise(opt) == norm or (value is not None and parse_number(opt) == value)
    ]
    return hits[0] if len(hits) == 1 else None


def _choice_verdict(pred: str, ref: str, options: Sequence[str]) -> Verdict | None:
    n = len(options) or 26
    expected = answer_letter(ref, n) or _option_letter(ref, options)
    if expected is None:
        return None  # the reference is not a letter: judge the value instead
    picked = answer_letter(pred, n) or _option_letter(pred, options)
    if picked is None:
        return Verdict("wrong", detail=f"names no option (expected {expected})")
    if picked == expected:
        return Verdict("correct", detail="option letter")
    return Verdict("wrong", detail=f"option {picked}, expected {expected}")


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
    ref_num = parse_number(ref)
    if ref_num is not None:
        pred_num = parse_number(pred)
        if pred_num is not None:
            ok = _close(pred_num, ref_num)
            return Verdict("correct" if ok else "wrong", detail="numeric")
    ref_bool = _boolean(ref)
    if ref_bool is not None and ref_num is None:
        pred_bool = _boolean(pred)
        ok = pred_bool is ref_bool
        return Verdict("correct" if ok else "wrong", detail="yes/no")
    if _normalise(pred) == _normalise(ref):
        return Verdict("correct", detail="exact")
    return None
