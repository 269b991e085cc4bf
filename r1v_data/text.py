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


def stable_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


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


def parse_options(value: Any) -> list[str]:
    """A list of options, or the string form some datasets use ("['a', 'b']")."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError, RecursionError, MemoryError):
                continue
        else:
            raise ValueError(f"options is a string that is not a list: {value[:80]!r}")
    if not isinstance(value, list | tuple):
        raise ValueError(f"options must be a list, got {type(value).__name__}")
    if len(value) > len(LETTERS):
        raise ValueError(f"{len(value)} options; at most {len(LETTERS)} can be lettered")
    return [str(v) for v in value]


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


def match_option_letter(answer: str, options: list[str]) -> str | None:
    """The letter of a multiple-choice answer given as a letter ("b", "(B)") or as option text."""
    letter = answer.strip().strip("().").upper()
    if len(letter) == 1 and letter in LETTERS[: len(options)]:
        return letter
    for i, opt in enumerate(options):
        if identity_text(opt) == identity_text(answer):
            return LETTERS[i]
    return None


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
