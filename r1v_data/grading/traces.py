"""Parse one teacher completion into its reasoning, its final answer and quality flags.

A completion in the R1 format is `<think>…</think>` followed by the answer, either inside
`<answer>…</answer>` (R1-V) or as `\\boxed{…}` (R1V, DeepSeek-R1). Real outputs break the format:
the opening tag may live in the prompt (R1V starts the assistant turn with `<think>\\n`), the
closing tag may never come (truncation, loops), the answer may be a phrase, a letter or a bare
number. `parse_completion` never raises on such text; it reports what it found and how.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedTrace", "answer_letter", "find_boxed", "is_repetitive", "parse_completion"]

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox|framebox)\s*(?:\[[^\]]*\]\s*)?\{")
# "Answer: X", "the answer is X", "final answer is X", "the answer to (a) is X", "answer should be X".
_PHRASE = re.compile(
    r"\banswer\b(?:\s+(?:to|for|of)\b[^.:\n]{0,80}?)?\s*(?:is|should be|would be|will be|:|=)"
    r"\s*:?[ \t]*(?P<ans>[^\n]*)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")
# A last line that is only an option letter, possibly with its text: "B", "(B)", "B.", "B) 12".
_LETTER_LINE = re.compile(r"^(?:(?:option|choice)\s*)?\(?([A-J])\)?(?:[.:)]\s.*|[.:)])?$", re.I)
_LETTER_PAREN = re.compile(r"\(([A-J])\)[.!]?$")
_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.DOTALL)


@dataclass(frozen=True)
class ParsedTrace:
    """What `parse_completion` found in one completion.

    Attributes:
        think: the reasoning text (tags removed), or None when there is no think block.
        answer: the final answer as written (LaTeX kept), or None.
        answer_source: the rule that found the answer: "answer_tag", "boxed", "answer_phrase",
            "choice_letter" or "last_number"; None when there is no answer.
        think_closed: a think block was opened (in the text or the prefix) and closed.
        has_think: a think block was opened, or a closing tag shows one was opened by the template.
        truncated: the generation stopped on its length limit, or (finish reason unknown) an
            opened think or answer block never closed.
        repetition: the tail of the text loops (see `is_repetitive`).
    """

    think: str | None
    answer: str | None
    answer_source: str | None
    think_closed: bool
    has_think: bool
    truncated: bool
    repetition: bool


def parse_completion(
    text: str, finish_reason: str | None = None, *, assistant_prefix: str = ""
) -> ParsedTrace:
    """Split a completion into think and answer and flag truncation and loops.

    Args:
        text: the generated text.
        finish_reason: the backend's finish reason ("stop", "length", …) when known. "length"
            means truncated; any other known reason means the model stopped on its own.
        assistant_prefix: text the prompt put at the start of the assistant turn. When it opens
            `<think>`, the completion starts inside the think block.
    """
    full = assistant_prefix + text
    think, rest, has_think, closed = _split_think(full)
    # With the think closed only the text after it counts; without, the whole text is searched
    # (a truncated trace may still have stated its answer) and the flags say so.
    found = _find_answer(rest)
    answer, source = found if found else (None, None)
    unclosed_answer = len(_ANSWER_OPEN.findall(rest)) > len(_ANSWER_TAG.findall(rest))
    if finish_reason is not None:
        truncated = finish_reason == "length"
    else:
        truncated = (has_think and not closed) or unclosed_answer
    return ParsedTrace(
        think=think,
        answer=answer,
        answer_source=source,
        think_closed=closed,
        has_think=has_think,
        truncated=truncated,
        repetition=is_repetitive(text),
    )


def _split_think(full: str) -> tuple[str | None, str, bool, bool]:
    """Return (think, text to search for the answer, has_think, think_closed)."""
    opened = _OPEN.search(full)
    if opened is None:
        close = _CLOSE.search(full)
        if close is None:
            return None, full, False, False
        # A closing tag alone: the chat template opened the block (DeepSeek-R1 style).
        return full[: close.start()].strip(), full[close.end() :], True, True
    start = opened.end()
    close = _CLOSE.search(full, start)
    if close is not None:
        return _strip_open(full[start : close.start()]), full[close.end() :], True, True
    # Never closed: the think is everything up to an answer block, if one was started.
    answer_at = _ANSWER_OPEN.search(full, start)
    end = answer_at.start() if answer_at else len(full)
    return _strip_open(full[start:end]), full[start:], True, False


def _strip_open(think: str) -> str:
    # A model given "<think>\n" in its prompt often writes the tag again.
    return (
        _OPEN.sub("", think, count=1).strip()
        if think.lstrip().lower().startswith("<think>")
        else think.strip()
    )


def _find_answer(text: str) -> tuple[str, str] | None:
    """Apply the extraction rules in order of trust; return (answer, rule) or None."""
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        content = tagged[-1]
    else:
        opened = list(_ANSWER_OPEN.finditer(text))
        content = text[opened[-1].end() :] if opened else None  # truncated inside <answer>
    if content is not None:
        boxed = find_boxed(content)
        inner = _clean(boxed if boxed is not None else content)
        if inner:
            return inner, "answer_tag"
    visible = _ANSWER_TAG.sub(" ", text)  # an empty answer tag must not shadow the text
    for rule, finder in _RULES:
        found = finder(visible)
        if found:
            return found, rule
    return None


def find_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{…}` (or `\\fbox`, `\\framebox`), braces balanced."""
    for match in reversed(list(_BOX.finditer(text))):
        depth, i = 1, match.end()
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                i += 2  # an escaped brace (\{) does not count
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                return text[match.end() : i]
            i += 1
    return None


def _boxed_rule(text: str) -> str | None:
    boxed = find_boxed(text)
    return _clean(boxed) if boxed is not None else None


def _phrase_rule(text: str) -> str | None:
    for match in reversed(list(_PHRASE.finditer(text))):
        ans = _clean(_first_sentence(match.group("ans")))
        if ans:
            return ans
    return None


def _first_sentence(s: str) -> str:
    # Cut at a full stop followed by a space ("5. So …") but not inside a decimal ("3.5").
    cut = re.search(r"\.(?:\s|$)|;", s)
    return s[: cut.start()] if cut else s


def _letter_rule(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    last = _unwrap(lines[-1].strip())
    match = _LETTER_LINE.match(last) or _LETTER_PAREN.search(last)
    return match.group(1).upper() if match else None


def _number_rule(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


_RULES = (
    ("boxed", _boxed_rule),
    ("answer_phrase", _phrase_rule),
    ("choice_letter", _letter_rule),
    ("last_number", _number_rule),
)


def _unwrap(s: str) -> str:
    """Remove markdown emphasis and math delimiters around a whole answer."""
    s = s.strip().strip("*_").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)].strip()
    return s


def _clean(s: str) -> str:
    s = _unwrap(s)
    s = s.rstrip(".,;:!").strip()
    wrapped = _WRAPPERS.match(s)
    if wrapped:
        s = wrapped.group(1).strip()
    return _unwrap(s)


def answer_letter(answer: str, n_options: int) -> str | None:
    """The option letter an answer names ("B", "(B)", "b.", "Option B", "B) 12" → "B").

    Returns None when the answer names no letter, or one beyond the `n_options` choices.
    A lower-case letter counts only alone ("b", "b.", "(b)"): "a cat" is not option A.
    """
    if not answer or n_options <= 0:
        return None
    s = _clean(answer)
    boxed = find_boxed(s)
    if boxed is not None:
        s = _clean(boxed)
    s = re.sub(r"^(?:the\s+)?(?:correct\s+)?(?:option|choice|answer)\s*(?:is\s*)?:?\s*", "", s, flags=re.I)
    alone = re.fullmatch(r"\(?([A-Za-z])\)?[.:)]?", s)
    leading = re.match(r"\(?([A-Z])(?:\)|[.:]\s|[.:]?$|\s)", s)
    match = alone or leading
    if match is None:
        return None
    letter = match.group(1).upper()
    return letter if ord(letter) - ord("A") < n_options else None


# ----------------------------------------------------------------------------- repetition
# Tuned on the R1-V eval logs and the MATH-Vision outputs (tests/r1v_data/grading/test_traces.py): a
# looping model repeats a block of 3-400 characters until its length limit, at temperature with
# small drifts ("W. 2 X. 3 Y. 4 Z. 5 W. 3 …"). So the test is near-periodicity of the tail: some
# period p for which the last max(2p, 120) bytes agree with the bytes p earlier at >= 85% of
# positions (three copies at least). Clean traces reach 0.79 at most on that data, loops 0.83-1.0.
_TAIL_BYTES = 1500
_MAX_PERIOD = 400
_MIN_SPAN = 120
_MIN_AGREEMENT = 0.85


def is_repetitive(text: str) -> bool:
    """True when the end of `text` is (nearly) one block repeated three or more times."""
    tail = " ".join(text[-2 * _TAIL_BYTES :].split()).encode()[-_TAIL_BYTES:]
    n = len(tail)
    for period in range(1, _MAX_PERIOD + 1):
        span = max(2 * period, _MIN_SPAN)
        if span + period > n:
            break
        # Byte-wise equality of two slices in C: XOR as big integers, count the zero bytes.
        diff = int.from_bytes(tail[n - span :]) ^ int.from_bytes(tail[n - span - period : n - period])
        if diff.to_bytes(span).count(0) >= _MIN_AGREEMENT * span:
            return True
    return False
