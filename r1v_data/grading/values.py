"""The value of a closed-form number written in LaTeX: `\\frac{14}{3}+1`, `3\\sqrt{13}`, `2^{10}`,
`\\frac{\\pi}{4}`, `(1+\\sqrt{5})/2`.

`latex_value` reads numbers, `+ - * /`, `\\cdot`, `\\times`, `\\div`, `^`, `\\frac` (`\\dfrac`,
`\\tfrac`, `\\frac12`), `\\sqrt` (`\\sqrt[3]{x}`), `\\pi`, brackets and implicit products (`2\\pi`),
and nothing else: a variable, a comma, a unit, a percent or degree sign makes it return None, and
the pair goes to math-verify. `varies` reads the same with single-letter variables (`2k+2`,
`\\frac{11+9a}{20}`) and says whether the expression takes two values: one that does can never
equal a number. It is a recursive-descent parser over at most `MAX_CHARS`
characters, so it is bounded, and a power too large for a float is None, never a hang.
"""

from __future__ import annotations

import math
import re

from r1v_data.grading.numbers import parse_number

__all__ = ["MAX_CHARS", "latex_value", "not_one_number", "variables_in", "varies"]

MAX_CHARS = 120
_TOKEN = re.compile(
    r"\s+|\\[,;! ]|\\left|\\right"  # spacing, sizing: skipped
    r"|(\d+(?:\.\d+)?|\.\d+)"  # 1: a number
    r"|(\\(?:d|t)?frac|\\sqrt|\\pi|\\cdot|\\times|\\div|[-+*/^(){}\[\]])"  # 2: an operator or command
    r"|([A-Za-z])(?![A-Za-z])"  # 3: a one-letter name (a word or a command never gets here)
)
_SKIPPED = (None, None, None)
# e and i are constants to math-verify, not variables
_NOT_VARIABLES = frozenset("eEiI")


class _NotAValue(Exception):
    """The text is not a closed-form number this parser reads."""


def latex_value(text: str, variables: dict[str, float] | None = None) -> float | None:
    """The value of `text` as a finite real number (its variables given those values), or None
    when it is not one this reads."""
    s = text.strip().strip("$").strip()
    if not s or len(s) > MAX_CHARS:
        return None
    try:
        parser = _Parser(_tokens(s), variables or {})
        value = parser.expression()
        if parser.peek() is not None:
            return None
    except (_NotAValue, ArithmeticError, ValueError):
        return None
    return value if math.isfinite(value) else None


def varies(text: str) -> bool:
    """True when `text` is an expression in one-letter variables that takes two different values
    (`2k+2`, `x^8+1`), so that it never equals a number. False for what reads no variable, for
    `x - x` or `a^0` (constant), and for a number and one letter (`5 m`: math-verify reads a unit)."""
    s = text.strip().strip("$").strip()
    if len(s) > MAX_CHARS or not (names := variables_in(s)):
        return False
    if re.fullmatch(r"-?[\d.]+\s*[A-Za-z]", s):
        return False
    points = [
        {name: start * (1 + j / math.e) + j / math.pi for j, name in enumerate(names)}
        for start in _ODD_STARTS
    ]
    values = [latex_value(s, point) for point in points]
    if None in values:
        return False
    return abs(values[0] - values[1]) > 1e-6 * max(1.0, abs(values[0]), abs(values[1]))


# Two points where nothing an answer writes is likely to take one value by chance; a constant that
# only seems to vary would need rounding errors of 1e-6 of its size (not seen in answers).
_ODD_STARTS = (math.sqrt(2), math.pi / 3)


def variables_in(text: str) -> list[str]:
    """The one-letter variables of an expression this reads (`2k+2`: k); none for `5\\,\\text{cm}`."""
    s = text.strip().strip("$").strip()
    try:
        tokens = _tokens(s)
    except _NotAValue:
        return []
    names = {t for t in tokens if t.isalpha() and len(t) == 1}
    return sorted(names) if names and not names & _NOT_VARIABLES else []


def _tokens(s: str) -> list[str]:
    tokens, at = [], 0
    while at < len(s):
        m = _TOKEN.match(s, at)
        if m is None:
            raise _NotAValue(s[at:])
        if m.groups() != _SKIPPED:
            tokens.append(m.group())
        at = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], variables: dict[str, float]):
        self.tokens, self.at, self.variables = tokens, 0, variables

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _NotAValue(expected or "end")
        self.at += 1
        return token

    def expression(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            sign = 1 if self.take() == "+" else -1
            value += sign * self.term()
        return value

    def term(self) -> float:
        value = self.power()
        while True:
            token = self.peek()
            if token in ("*", "\\cdot", "\\times"):
                self.take()
                value *= self.power()
            elif token in ("/", "\\div"):
                self.take()
                value /= self.power()
            elif token is not None and _starts_primary(token):
                value *= self.power()  # 2\pi, 3\sqrt{2}, 2(1+\sqrt{5}); never "1.5 3" (ambiguous)
            else:
                return value

    def power(self) -> float:
        if self.peek() in ("-", "+"):
            return (-1 if self.take() == "-" else 1) * self.power()
        base = self.primary()
        if self.peek() == "^":
            self.take()
            exponent = self.group()
            return math.pow(base, exponent)
        return base

    def primary(self) -> float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return float(token)
        if token == "\\pi":
            return math.pi
        if token in self.variables:
            return self.variables[token]
        if token in ("(", "{", "["):
            value = self.expression()
            self.take({"(": ")", "{": "}", "[": "]"}[token])
            return value
        if token.endswith("frac"):
            return self.group() / self.group()
        if token == "\\sqrt":
            root = self._root_index()
            return math.pow(self.group(), 1 / root)
        raise _NotAValue(token)

    def group(self) -> float:
        """A braced group, or one digit (LaTeX's `\\frac12`, `2^3`)."""
        token = self.peek()
        if token == "{":
            return self.primary()
        if token is not None and token.isdigit():
            self.take()
            if len(token) > 1:  # "\frac12": the rest of the digits stay for what follows
                self.tokens.insert(self.at, token[1:])
            return float(token[0])
        raise _NotAValue(token or "end")

    def _root_index(self) -> float:
        if self.peek() != "[":
            return 2.0
        self.take()
        index = self.expression()
        self.take("]")
        return index


def _starts_primary(token: str) -> bool:
    return (
        token in ("\\pi", "(", "{", "\\sqrt")
        or token.endswith("frac")
        or (len(token) == 1 and token.isalpha())
    )


_OUTER = re.compile(r"^\\left\s*[(\[]|^\\\{|^[(\[]|\\right\s*[)\]]$|\\\}$|[)\]]$")
_MATRIX = re.compile(r"\\begin\{[pbvBV]?matrix\}.*(?:&|\\\\).*\\end\{[pbvBV]?matrix\}", re.DOTALL)
_WORDS = re.compile(r"(?:\\text\{\s*)?[A-Za-z][A-Za-z ]*[A-Za-z](?:\s*\})?")


def not_one_number(text: str) -> str | None:
    """What `text` is when it can never equal a single number, else None: "several values" (a
    tuple, an interval or a list of at least two elements whose values are not all the same:
    `(2, \\infty)`, `3, 5, 7`; math-verify reads `3, 3` as the set {3}, which does equal 3), "a
    matrix" of two entries or more, or "words" (`\\text{east}`, `Navin`; no digit)."""
    s = text.strip().strip("$").strip()
    if not s or len(s) > MAX_CHARS or parse_number(s) is not None:  # "1,234" is one number
        return None
    if _MATRIX.search(s):
        return "a matrix"
    if _WORDS.fullmatch(s) and len(s.strip()) > 1:
        return "words"
    elements = _top_level_elements(_OUTER.sub("", s))
    if len(elements) < 2:
        return None
    values = [latex_value(e) for e in elements]
    if None not in values and len(set(values)) == 1:
        return None
    return "several values"


def _top_level_elements(s: str) -> list[str]:
    """`s` split at the commas outside any bracket."""
    elements, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            elements.append(s[start:i])
            start = i + 1
    return [e.strip() for e in [*elements, s[start:]] if e.strip()]
