"""Plain numbers, percentages and clock times as answers are written in the wild.

`parse_number` reads the value of an answer that is one number with decoration around it: math
delimiters, a variable name (`x = 4,656`), a leading `=` (`=\\frac{7}{4}`), thousands separators,
a currency sign, units and words after it (`16.2 nautical miles`, `90 lemon-flavored candies`,
`12 \\text{cm}^2`, `6米`), degrees with a compass or temperature letter (`118^\\circ T`, `45°C`),
percent signs, fractions (`\\frac{1}{2}`, `-3/4`) and ratios (`1:4`). `same_number` compares two
such values, and `same_time` two clock times.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

__all__ = ["Quantity", "parse_number", "parse_quantity", "parse_time", "same_number", "same_time"]

_MAX_NUMBER_CHARS = 80  # longer text is no plain number; bounds the regex work too
# Unit words: "cm", "nautical miles", "lemon-flavored candies", "米"; not one letter ("x", "i").
# Words are separated by spaces or hyphens so the pattern cannot backtrack exponentially.
_UNIT_TAIL = re.compile(
    r"(?:\s*[A-Za-z]{2,}(?:-[A-Za-z]+)*\.?(?:\s+[A-Za-z]{2,}(?:-[A-Za-z]+)*\.?)*|\s*[\u4e00-\u9fff]+)"
    r"(?:\^?\{?[23]\}?|[²³])?$"
)
_NOT_UNITS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "cot", "sec", "csc", "exp"}
_PERCENT = re.compile(r"(?:\\%|%|\s*\bper\s*cent\b|\s*\bpercent(?:age)?\b)$", re.IGNORECASE)
_SYMBOL_UNITS = re.compile(
    r"(?:(?:\^\s*\{?\\circ\}?|\\circ|°|\\degree)\s*[A-Z]{0,3}|\\(?:text|mathrm|mbox)\{[^{}]*\}(?:\^\{?[23]\}?)?)$"
)
# A name before an "=": "x =", "AB =", "x_1 =", "\\theta =", "Area ="
_VARIABLE = re.compile(r"^(?:[A-Za-z]\w{0,15}|\\[A-Za-z]+)\s*(?:_\{?\w{1,8}\}?)?\s*=\s*")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?)\\[dt]?frac(\d)(\d)")
_SLASH = re.compile(r"([+-]?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")
_RATIO = re.compile(r"(\d+)\s*:\s*(\d+)")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?:\s*([AaPp])\.?\s?[Mm]\.?)?")


class Quantity(NamedTuple):
    """A number as written: its value, and whether a percent sign (or word) followed it."""

    value: Fraction
    percent: bool


@lru_cache(maxsize=1 << 16)  # pure; references repeat n times per problem in generate
def parse_quantity(text: str) -> Quantity | None:
    """The number an answer states (see the module's docstring), else None."""
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    s = _strip_math(text)
    s = _VARIABLE.sub("", s.lstrip("=").strip(), count=1)
    percent = False
    for _ in range(3):  # "12 \\text{cm}^2", "45^{\\circ}", "12 % of them": peel until none is left
        before = s
        if _PERCENT.search(s):
            s, percent = _PERCENT.sub("", s).strip(), True
        s = _SYMBOL_UNITS.sub("", s).strip()
        unit = _UNIT_TAIL.search(s)
        if unit and unit.start() > 0 and not _NOT_UNITS & set(unit.group().lower().split()):
            s = s[: unit.start()].strip()
        if s == before:
            break
    value = _value(s.lstrip("$").replace("\\$", "").replace("\\!", "").strip())
    return Quantity(value, percent) if value is not None else None


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number, with units and decoration removed, else None.

    Understands "1,234.5", "$12", "45°", "45^\\circ", "12\\%" (12), "3 cm", "\\frac{1}{2}", "-3/4",
    "x = 4,656", "=\\frac{7}{4}", "1:4" (a ratio; "2:35" is a clock time, not a number).
    """
    quantity = parse_quantity(text)
    return quantity.value if quantity else None


def _value(s: str) -> Fraction | None:
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    if m := _FRAC.fullmatch(s):
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else m.group(4, 5, 6)
        return _ratio(Fraction(num), Fraction(den), sign == "-")
    if m := _SLASH.fullmatch(s.lstrip("+-")):
        return _ratio(Fraction(m.group(1)), Fraction(m.group(2)), s.startswith("-"))
    if (m := _RATIO.fullmatch(s)) and not _CLOCK.fullmatch(s):
        return _ratio(Fraction(m.group(1)), Fraction(m.group(2)), False)
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
    for old, new in (
        ("\\left", ""),
        ("\\right", ""),
        ("\\,", ""),
        ("{,}", ","),
        (",\\! ", ","),
        ("~", " "),
        ("−", "-"),
    ):
        s = s.replace(old, new)
    return s


def _close(a: Fraction, b: Fraction) -> bool:
    # Relative 1e-6 for ordinary values, absolute 1e-9 so that 0 compares with 1e-12.
    return abs(a - b) <= max(Fraction(1, 10**9), Fraction(1, 10**6) * max(abs(a), abs(b)))


def same_number(pred: Quantity, ref: Quantity) -> bool:
    """Equal values; a percentage on one side only also matches the other written as the same
    figure or as the fraction (`45%` = `45` = `0.45`), as math-verify accepts both."""
    if _close(pred.value, ref.value):
        return True
    if pred.percent != ref.percent:
        with_sign, plain = (pred, ref) if pred.percent else (ref, pred)
        return _close(with_sign.value / 100, plain.value)
    return False


def parse_time(text: str) -> tuple[int, bool] | None:
    """(minutes after midnight, whether AM/PM was written) of a clock time: "2:35 PM",
    "2:35 p.m.", "14:35", "12:05 am"; None for anything else."""
    m = _CLOCK.fullmatch(_strip_math(text).rstrip(".").strip()) if len(text) <= 40 else None
    if m is None or int(m.group(2)) >= 60 or int(m.group(1)) > 23:
        return None
    hours, minutes, half = int(m.group(1)), int(m.group(2)), m.group(3)
    if half is not None:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if half.lower() == "p" else 0)
    return hours * 60 + minutes, half is not None


def same_time(pred: tuple[int, bool], ref: tuple[int, bool]) -> bool:
    """The same clock time; a time written without AM/PM (`2:35`) matches either half of the day."""
    if pred[1] and ref[1]:
        return pred[0] == ref[0]
    return pred[0] % 720 == ref[0] % 720
