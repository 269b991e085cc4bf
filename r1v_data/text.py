"""Text normalisation shared by ingest, identity hashing and, later, dedup and prompts."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import string
import unicodedata
from typing import Any

_PLACEHOLDER = re.compile(r"<\s*(?:image|img)[\s_-]*(\d+)\s*>", re.IGNORECASE)
_WS = re.compile(r"\s+")
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*(°|%|\\%|\^\\circ|\^\{\\circ\})?$")
LETTERS = string.ascii_uppercase
MAX_LEVEL = 1000  # difficulty levels are small integers; anything else stays raw in `extra`


def normalise_placeholders(question: str) -> str:
    """`<image 1>`, `<image_1>`, `<img1>` -> `<image1>` (MATH-Vision's form), one style everywhere."""
    return _PLACEHOLDER.sub(lambda m: f"<image{int(m.group(1))}>", question)


def identity_text(text: str) -> str:
    """The form of a question that identity hashes see: Unicode NFKC, whitespace collapsed.
    Case is kept: in maths `A` and `a` are different problems."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def sample_id(question: str, image_sha256s: list[str]) -> str:
    """Content hash of a problem: the normalised question and the images' bytes, in order."""
    h = hashlib.sha256(identity_text(question).encode())
    for digest in image_sha256s:
        h.update(b"\x00" + digest.encode())
    return h.hexdigest()[:32]


_HASHED_JSON = json.JSONEncoder(sort_keys=True, default=str)  # json.dumps(..., sort_keys=True, default=str)


def stable_hash(*parts: Any) -> str:
    return hashlib.sha256(_HASHED_JSON.encode(parts).encode()).hexdigest()[:32]


def render_question(question: str, options: list[str]) -> str:
    """Options are rendered one way everywhere: a blank line, `Choices:`, then `(A) text` lines
    (`(A)` alone when the option is just its letter, as in MATH-Vision's picture options)."""
    if not options:
        return question
    lines = [
        f"({LETTERS[i]})" if opt.strip() in ("", LETTERS[i]) else f"({LETTERS[i]}) {opt.strip()}"
        for i, opt in enumerate(options)
    ]
    return f"{question.rstrip()}\n\nChoices:\n" + "\n".join(lines)


# An option's own label: "A.", "A:", "A)", "(A)", "Ａ．"; what follows is the option's text.
_LABEL = re.compile(r"\s*(?:\(([A-Z])\)|([A-Z])\s*[.:)：．])\s*")
# Where a label may start inside one string of options: its start, a new line, or after ";" or
# whitespace ("A. 1;B. 2", "(A) 1 (B) 2"). Bounded lookbehind: one pass over the string.
_INLINE_LABEL = re.compile(r"(?:^|(?<=[\s;,]))(?:\(([A-Z])\)|([A-Z])[.:)：．])")


def parse_options(value: Any) -> list[str]:
    """The options of a multiple-choice problem as a list of their texts, labels removed.

    Accepted: a list (`["1", "2"]`, or labelled `["A. 1", "(B) 2"]`), a dict keyed by letter
    (`{"A": "1", "B": "2"}`), the string form of either (`"['1', '2']"`), or one string of
    labelled options, inline or one per line (`"A. 1;B. 2"`, `"(A) 1 (B) 2"`, `"A: 1\nB: 2"`).
    Labels are removed only when every option carries the next letter from A on, so an option
    that merely starts with a capital ("A. Lincoln" alone) keeps its text.
    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = _options_from_string(value)
    if isinstance(value, dict):
        value = _options_from_dict(value)
    if not isinstance(value, list | tuple):
        raise ValueError(f"options must be a list, got {type(value).__name__}")
    if len(value) > len(LETTERS):
        raise ValueError(f"{len(value)} options; at most {len(LETTERS)} can be lettered")
    return _strip_labels([str(v) for v in value])


def _options_from_string(value: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            continue
    labelled = _split_labelled(value)
    if labelled is None:
        raise ValueError(f"options is a string that is not a list: {value[:80]!r}")
    return labelled


def _split_labelled(value: str) -> list[str] | None:
    """Split "A. 1;B. 2" into ["1", "2"]: the labels A, B, C... in order, each option up to the next."""
    starts, expected = [], 0
    for match in _INLINE_LABEL.finditer(value):
        if (match.group(1) or match.group(2)) == LETTERS[expected]:
            starts.append((match.start(), match.end()))
            expected += 1
            if expected == len(LETTERS):
                break
    if len(starts) < 2 or starts[0][0] != len(value) - len(value.lstrip()):
        return None  # one label is no list, and text before "A." is no option
    ends = [start for start, _ in starts[1:]] + [len(value)]
    return [value[body:end].strip().rstrip(";,").strip() for (_, body), end in zip(starts, ends, strict=True)]


def _options_from_dict(value: dict[Any, Any]) -> list[Any]:
    keys = [str(k).strip().strip("().").upper() for k in value]
    if sorted(keys) == list(LETTERS[: len(keys)]):  # {"B": ..., "A": ...}: in letter order
        return [v for _, v in sorted(zip(keys, value.values(), strict=True))]
    return list(value.values())


def _strip_labels(options: list[str]) -> list[str]:
    labels = [_LABEL.match(opt) for opt in options]
    if len(options) < 2 or not all(
        m and (m.group(1) or m.group(2)) == LETTERS[i] for i, m in enumerate(labels)
    ):
        return options
    return [opt[m.end() :].strip() for opt, m in zip(options, labels, strict=True) if m]


def answer_to_text(value: Any) -> str | None:
    """Reference answers as text: 27.0 -> "27", True -> "True", lists joined by ", "."""
    if value is None or _is_nan(value):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    text = str(value).strip()
    return text or None


# Several letters named together: "C, D", "C and D", "C\nD", "(C)(D)", "C & D", "C; D".
_LETTER_SEP = re.compile(r"\s*(?:[,;&/]|\band\b)\s*|\s+")
_LETTER_RUN = re.compile(r"[A-Z]{2,}")


def option_letters(answer: str, n_options: int) -> list[str] | None:
    """The option letters an answer names, in order, or None when it names none.

    One letter alone: "B", "(B)", "b", "b.", "B)". Several: "C, D", "C and D", "C\nD", "CD",
    "(C) (D)". Every letter must be one of the first `n_options`; several are upper-case and
    written alike (all in brackets or none), so "(A) P and R" is option A's label and text, not
    three letters. "C or D" names no set. Duplicates count once.
    """
    s = answer.strip()
    if not s or len(s) > 4 * n_options + 20:  # longer text is never a list of letters
        return None
    alone = re.fullmatch(r"\(([A-Za-z])\)|([A-Za-z])[.:)]?", s)
    if alone:
        letters = [(alone.group(1) or alone.group(2)).upper()]
    elif _LETTER_RUN.fullmatch(s):
        letters = list(s)
    else:
        letters = _letter_list(s)
    if not letters or any(LETTERS.index(x) >= n_options for x in letters):
        return None
    return sorted(set(letters))


def _letter_list(s: str) -> list[str] | None:
    tokens = [t for t in _LETTER_SEP.split(s.replace(")(", ") (")) if t]
    bare = all(re.fullmatch(r"[A-Z]", t) for t in tokens)
    bracketed = all(re.fullmatch(r"\([A-Z]\)", t) for t in tokens)
    if len(tokens) < 2 or not (bare or bracketed):
        return None
    return [t.strip("()") for t in tokens]


def match_option_letter(answer: str, options: list[str]) -> str | None:
    """The letter(s) of a multiple-choice answer, written as stored ("B", or "C, D" for several):
    an option's exact text first (an option may read "CD", a segment), else the letters it names
    (`option_letters`); None when it names no option."""
    for i, opt in enumerate(options):
        if identity_text(opt) == identity_text(answer):
            return LETTERS[i]
    letters = option_letters(answer, len(options))
    return ", ".join(letters) if letters else None


def answer_type(answer: str | None, is_choice: bool) -> str | None:
    if answer is None:
        return None
    if is_choice:
        return "multiple_choice"
    a = (
        answer.strip().replace(",", "")
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", answer.strip())
        else answer.strip()
    )
    if _INTEGER.match(a):
        return "integer"
    if _NUMBER.match(a):
        return "number"
    if a.lower() in ("true", "false", "yes", "no"):
        return "boolean"
    if any(c in a for c in "\\^_{}=/()[]<>√π") or re.search(r"\d", a):
        return "expression"
    return "text"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def parse_difficulty(value: Any) -> int | None:
    """1..N levels: 3, "3", "Level 3" -> 3; anything else -> None (the raw value stays in extra)."""
    if value is None or isinstance(value, bool) or _is_nan(value):
        return None
    level: int | None = None
    if isinstance(value, int):
        level = value
    elif isinstance(value, float) and value.is_integer():
        level = int(value)
    elif m := re.fullmatch(r"\s*(?:level\s*)?(\d{1,6})\s*", str(value), re.IGNORECASE):
        level = int(m.group(1))
    return level if level is not None and 0 <= level <= MAX_LEVEL else None
