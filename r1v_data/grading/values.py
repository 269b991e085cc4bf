"""The value of a closed-form number written in LaTeX: `\\frac{14}{3}+1`, `3\\sqrt{13}`, `2^{10}`,
`\\frac{\\pi}{4}`, `(1+\\sqrt{5})/2`.

`latex_value` reads numbers, `+ - * /`, `\\cdot`, `\\times`, `\\div`, `^`, `\\frac` (`\\dfrac`,
`\\tfrac`, `\\frac12`), `\\sqrt` (`\\sqrt[3]{x}`), `\\pi`, brackets and implicit products (`2\\pi`),
and nothing else: a variable, a comma, a unit, a percent or degree sign makes it return None, and
the pair goes to math-verify. It is a recursive-descent parser over at most `MAX_CHARS`
characters, so it is bounded, and a power too large for a float is None, never a hang.
"""

from __future__ import annotations

import math
import re

from r1v_data.grading.numbers import parse_number

__all__ = ["MAX_CHARS", "latex_value", "not_one_number"]

MAX_CHARS = 120
_TOKEN = re.compile(
    r"\s+|\\[,;! ]|\\left|\\right"  # spacing, sizing: skipped
    r"|(\d+(?:\.\d+)?|\.\d+)"  # 1: a number
    r"|(\\(?:d|t)?frac|\\sqrt|\\pi|\\cdot|\\times|\\div|[-+*/^(){}\[\]])"  # 2: an operator or command
)
_SKIPPED = (None, None)


class _NotAValue(Exception):
    """The text is not a closed-form number this parser reads."""


def latex_value(text: str) -> float | None:
    """The value of `text` as a finite real number, or None when it is not one this reads."""
    s = text.strip().strip("$").strip()
    if not s or len(s) > MAX_CHARS:
        return None
    try:
        parser = _Parser(_tokens(s))
        value = parser.expression()
        if parser.peek() is not None:
            return None
    except (_NotAValue, ArithmeticError, ValueError):
        return None
    return value if math.isfinite(value) else None


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
    def __init__(self, tokens: list[str]):
        self.tokens, self.at = tokens, 0

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
    return token in ("\\pi", "(", "{", "\\sqrt") or token.endswith("frac")


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
