"""Parse one teacher completion into its reasoning, its final answer and quality flags.

A completion in the R1 format is `<think>…</think>` followed by the answer, either inside
`<answer>…</answer>` (R1-V) or as `\\boxed{…}` (R1V, DeepSeek-R1). Real outputs break the format:
the opening tag may live in the prompt (R1V starts the assistant turn with `<think>\\n`), the
closing tag may never come (truncation, loops), the answer may be a phrase, a letter or a bare
number. `parse_completion` never raises on such text; it reports what it found and how. The
answer itself is found by the rules of `answers.find_answer`, which know the problem: an option
letter is an answer only when the problem has options. Parsing is linear in the text's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from r1v_data.grading.answers import Problem, answer_letter, find_answer, find_boxed, has_unclosed_answer

__all__ = ["ParsedTrace", "Problem", "answer_letter", "find_boxed", "is_repetitive", "parse_completion"]

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedTrace:
    """What `parse_completion` found in one completion.

    Attributes:
        think: the reasoning text (tags removed), or None when there is no think block.
        answer: the final answer as written (LaTeX kept), or None.
        answer_source: the rule that found the answer (see `answers.find_answer`): "answer_tag",
            "boxed", "answer_phrase", "answer_hashes", "answer_label", "choice_letter" or
            "last_number"; None when there is no answer.
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
    text: str,
    finish_reason: str | None = None,
    *,
    assistant_prefix: str = "",
    options: Sequence[str] | None = None,
    answer_type: str | None = None,
) -> ParsedTrace:
    """Split a completion into think and answer and flag truncation and loops.

    Args:
        text: the generated text.
        finish_reason: the backend's finish reason ("stop", "length", …) when known. "length"
            means truncated; any other known reason means the model stopped on its own.
        assistant_prefix: text the prompt put at the start of the assistant turn. When it opens
            `<think>`, the completion starts inside the think block.
        options, answer_type: the problem's options and answer type. Without options (and
            unless the type is "multiple_choice") no option letter is read as an answer:
            a last line `A: 18` of a free-form solution answers 18, not "A".
    """
    full = assistant_prefix + text
    think, rest, has_think, closed = _split_think(full)
    # With the think closed only the text after it counts; without, the whole text is searched
    # (a truncated trace may still have stated its answer) and the flags say so.
    found = find_answer(rest, Problem(tuple(options or ()), answer_type))
    answer, source = found if found else (None, None)
    if finish_reason is not None:
        truncated = finish_reason == "length"
    else:
        truncated = (has_think and not closed) or has_unclosed_answer(rest)
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
_PERIODS = np.arange(1, _MAX_PERIOD + 1)
_SPANS = np.maximum(2 * _PERIODS, _MIN_SPAN)
# _IN_SPAN[p - 1, k]: position k (counted back from the end) is inside period p's span
_IN_SPAN = np.arange(_SPANS[-1])[None, :] < _SPANS[:, None]


def is_repetitive(text: str) -> bool:
    """True when the end of `text` is (nearly) one block repeated three or more times."""
    tail = " ".join(text[-2 * _TAIL_BYTES :].split()).encode()[-_TAIL_BYTES:]
    if len(tail) < _MIN_SPAN + 1:  # no period has room for its span and one copy before it
        return False
    backwards = np.frombuffer(tail[::-1], dtype=np.uint8)
    periods = int(np.count_nonzero(len(tail) >= _SPANS + _PERIODS))  # those with room for span + period
    if periods == 0:
        return False
    span = int(_SPANS[periods - 1])
    # All periods at once: row p - 1 holds the bytes p further back, compared with the last `span`.
    earlier = sliding_window_view(backwards, span)[1 : periods + 1]
    agree = (earlier == backwards[:span]) & _IN_SPAN[:periods, :span]
    counts = agree.view(np.uint8).sum(axis=1, dtype=np.int32)
    return bool((counts >= _MIN_AGREEMENT * _SPANS[:periods]).any())
