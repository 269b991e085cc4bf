"""Find the final answer in a completion's text, knowing the problem it answers.

`find_answer(text, problem)` tries these rules in order of trust; the first that finds something
wins, and its name is the `answer_source`:

1. `answer_tag`: the last complete `<answer>…</answer>` (or the text after a last `<answer>`
   that never closed). Inside it rules 2 and 3 apply again, else the whole content counts:
   `<answer>The answer is 5.</answer>` → `5`; `<answer> 4 </answer>` → `4`.
2. `boxed`: the last complete `\\boxed{…}` (also `\\fbox`, `\\framebox`), nested braces balanced:
   `so \\boxed{\\frac{a}{b+1}}.` → `\\frac{a}{b+1}`.
3. `answer_phrase`, `answer_hashes`, `answer_label`: the last explicit answer marker, whichever
   comes last in the text:
   - a phrase: "Answer: X", "Final answer: X", "the (final) answer is X", "answer should be X";
     X up to the end of its sentence: `So the answer is 18 apples. Done.` → `18 apples`;
   - GSM8K's `#### X` when X is a number (`#### 1,234` → `1,234`); `#### Step 2` is a Markdown
     heading, not an answer;
   - `A: X` in a `Q:`/`A:` layout, or in a free-form problem, when X is a value (a number, math,
     or a few words): `Q: How many?\\nA: 18` → `18`. With options and no `Q:` line, `A: 18` is
     option A's line instead (rule 4).
4. `choice_letter`, only when the problem has options or is multiple choice: the last line names
   an option: `(B)`, `B.`, `B) 12`, `Option B` → `B`. In a free-form problem a line `A: 18` is
   never the letter "A".
5. `last_number`: the last number of the text, after markup is removed (`markup.strip_markup`): HTML
   tags and entities, Markdown headings, list markers and link targets never supply digits, and
   neither do exponents, subscripts or the digits of a word (`m^2`, `x_1`, `h2`):
   `<h2>Result</h2> There are 7 apples.` → `7`; `The area is 18 m^2` → `18`. A time (`2:35 PM`),
   a fraction (`\\frac{7}{4}`, `7/4`), a percentage or a degree sign is kept with its number.

Every rule reads the text once, left to right: parsing is linear in the length of the completion
(`"\\boxed{" * N` and thousands of `<answer>` tags included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from r1v_data.grading.markup import strip_html, strip_markup
from r1v_data.text import option_letters

__all__ = ["Problem", "answer_letter", "answer_letters", "find_answer", "find_boxed"]


@dataclass(frozen=True)
class Problem:
    """What extraction needs to know about the problem: its options and answer type."""

    options: Sequence[str] = ()
    answer_type: str | None = None

    @property
    def is_choice(self) -> bool:
        return bool(self.options) or self.answer_type == "multiple_choice"

    @property
    def n_options(self) -> int:
        return len(self.options) or (26 if self.answer_type == "multiple_choice" else 0)


FREE_FORM = Problem()

# ----------------------------------------------------------------------------- answer tags
_ANSWER_TAGS = re.compile(r"<(/?)answer>", re.IGNORECASE)


def _last_tags(text: str) -> tuple[re.Match[str] | None, re.Match[str] | None, re.Match[str] | None]:
    """The last `<answer>`, the last `</answer>`, and the last `<answer>` before that close.
    One pass over the tags (not a lazy `<answer>(.*?)</answer>` search from every opening,
    which rescans the rest of the text for each of thousands of unclosed tags)."""
    last_open = last_close = open_before_close = None
    for tag in _ANSWER_TAGS.finditer(text):
        if tag.group(1):
            last_close, open_before_close = tag, last_open
        else:
            last_open = tag
    return last_open, last_close, open_before_close


def answer_tag_content(text: str) -> str | None:
    """The content of the last `<answer>…</answer>`, else the text after a last unclosed
    `<answer>` (a truncated answer), else None."""
    last_open, last_close, open_before_close = _last_tags(text)
    if last_open is not None and (last_close is None or last_open.start() > last_close.start()):
        return text[last_open.end() :]
    if last_close is None or open_before_close is None:
        return None
    return text[open_before_close.end() : last_close.start()]


def has_unclosed_answer(text: str) -> bool:
    """An `<answer>` was opened after the last `</answer>` (or with none at all)."""
    last_open, last_close, _ = _last_tags(text)
    return last_open is not None and (last_close is None or last_open.start() > last_close.start())


# ----------------------------------------------------------------------------- boxed
# Tokens of one pass: a box opening (with an optional short [..] argument), an escaped character,
# a brace. The [..] argument is bounded so "\\boxed[" repeated cannot rescan the rest of the text.
_BOX = r"\\(?:boxed|fbox|framebox)"
_BOX_TOKENS = re.compile(rf"({_BOX}\s*(?:\[[^\]\n]{{0,40}}\]\s*)?\{{)|\\(?!{_BOX}).|[{{}}]", re.DOTALL)


def find_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{…}` (or `\\fbox`, `\\framebox`), braces balanced;
    an escaped brace (`\\{`) does not count. One pass with a stack of open boxes."""
    if "box" not in text:
        return None
    depth, open_boxes, last = 0, [], None
    for token in _BOX_TOKENS.finditer(text):
        if token.group(1):
            open_boxes.append((depth, token.end()))
            depth += 1
        elif token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if open_boxes and open_boxes[-1][0] == depth:
                start = open_boxes.pop()[1]
                if last is None or start > last[0]:  # the box that starts last wins
                    last = (start, token.start())
    return text[last[0] : last[1]] if last else None


# ----------------------------------------------------------------------------- markers
# "answer is", "answer:", "answer to (a) is", "answer should be". The phrase is matched alone
# (its value is read afterwards up to the end of the line), so the last phrase of a line is found.
_PHRASE = re.compile(
    r"\banswer\b(?:\s+(?:to|for|of)\b[^.:\n]{0,80}?)?[ \t*_]{0,8}(?:is|should be|would be|will be|:|=)",
    re.IGNORECASE,
)
_HASHES = re.compile(r"^[ \t]*####[ \t]*(.+)$", re.MULTILINE)
_A_LABEL = re.compile(r"^[ \t]*[*_]{0,2}A[ \t]*[:：][*_]{0,2}[ \t]*(.+)$", re.MULTILINE)
_Q_LABEL = re.compile(r"^[ \t]*[*_]{0,2}Q[ \t]*[:：]", re.MULTILINE)
# A number as GSM8K writes it after ####: "18", "-3.5", "1,234", "$18", "18 dollars".
_PLAIN_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?(?:\s*%|(?:\s+[A-Za-z]+){0,3})\.?")
_MATH_START = re.compile(r"[-+(\[$\\\d]")


def _markers_rule(text: str, problem: Problem) -> tuple[str, str] | None:
    """The value of the last explicit answer marker that has a usable one."""
    markers = [(m.start(), "answer_phrase", m) for m in _PHRASE.finditer(text)]
    markers += [(m.start(), "answer_hashes", m) for m in _HASHES.finditer(text)]
    if not problem.is_choice or _Q_LABEL.search(text):
        markers += [(m.start(), "answer_label", m) for m in _A_LABEL.finditer(text)]
    for _, rule, match in sorted(markers, key=lambda x: x[0], reverse=True):
        value = _MARKER_VALUES[rule](text, match)
        if value:
            return value, rule
    return None


_MAX_ANSWER_LINE = 500  # an answer is never longer: bounds the work per marker


def _phrase_value(text: str, match: re.Match[str]) -> str | None:
    end = text.find("\n", match.end(), match.end() + _MAX_ANSWER_LINE)
    line = text[match.end() : end if end >= 0 else match.end() + _MAX_ANSWER_LINE]
    return _clean(_first_sentence(line.lstrip(" \t:*_"))) or None


def _hashes_value(text: str, match: re.Match[str]) -> str | None:
    value = _clean(match.group(1)[:_MAX_ANSWER_LINE])
    return value if _PLAIN_NUMBER.fullmatch(value) else None


def _label_value(text: str, match: re.Match[str]) -> str | None:
    value = _clean(_first_sentence(match.group(1)[:_MAX_ANSWER_LINE]))
    return value if _is_value(value) else None


_MARKER_VALUES = {
    "answer_phrase": _phrase_value,
    "answer_hashes": _hashes_value,
    "answer_label": _label_value,
}


def _first_sentence(s: str) -> str:
    # Cut at a full stop followed by a space ("5. So …") but not inside a decimal ("3.5").
    cut = re.search(r"\.(?:\s|$)|;", s)
    return s[: cut.start()] if cut else s


def _is_value(s: str) -> bool:
    """A number, math, or a few words ("Yes", "Tuesday"); not a sentence of reasoning."""
    return bool(s) and (bool(_MATH_START.match(s)) or (len(s) <= 40 and len(s.split()) <= 3))


# ----------------------------------------------------------------------------- letters
# "(B)", "(B) because ...", "B", "B.", "B) 12", "B: 12", "Option B"
_LETTER_LINE = re.compile(
    r"(?:(?:option|choice)\s*)?(?:\(([A-Z])\)(?:[.:]?\s.*)?|([A-Z])(?:[.:)]\s.*|[.:)])?)", re.IGNORECASE
)
_LETTER_PAREN = re.compile(r"\(([A-Z])\)[.!]?$")


def _letter_rule(text: str, problem: Problem) -> str | None:
    if not problem.is_choice:
        return None
    line = _last_line(text)
    if line is None:
        return None
    last = _unwrap(line)
    match = _LETTER_LINE.fullmatch(last) or _LETTER_PAREN.search(last)
    if match is None:
        return None
    letter = next(group for group in match.groups() if group).upper()
    return letter if ord(letter) - ord("A") < problem.n_options else None


def _last_line(text: str) -> str | None:
    for line in reversed(text.rstrip().splitlines()[-50:]):
        if line.strip():
            return line.strip()
    return None


def answer_letter(answer: str, n_options: int) -> str | None:
    """The one option letter an answer names ("B", "(B)", "b.", "Option B", "B) 12", "**B**",
    "$\\boxed{B}$" → "B"); None when it names none, several, or one beyond `n_options`.
    A lower-case letter counts only alone ("b", "b.", "(b)"): "a cat" is not option A."""
    letters = answer_letters(answer, n_options)
    return letters[0] if letters and len(letters) == 1 else None


_OPTION_PREFIX = re.compile(
    r"^(?:the\s+)?(?:correct\s+)?(?:option|choice|answer)s?\s*(?:is|are)?\s*:?\s*", re.IGNORECASE
)
_TEXT_INLINE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")  # "C \\text{ and } D"
_LABELLED = re.compile(r"\(([A-Z])\)|([A-Z])(?:[.:)]\s|[.:)]$)")


def answer_letters(answer: str, n_options: int) -> list[str] | None:
    """The option letters an answer names: one (`answer_letter`'s forms) or several ("C, D",
    "C and D", "CD", "(C) (D)", `text.option_letters`); a letter followed by its option's text
    ("(A) P and R", "B. 12 cm") names that one letter. None when it names no option."""
    if not answer or n_options <= 0:
        return None
    s = _clean(answer)
    boxed = find_boxed(s)
    if boxed is not None:
        s = _clean(boxed)
    s = _OPTION_PREFIX.sub("", _TEXT_INLINE.sub(r"\1", s), count=1)
    letters = option_letters(s, n_options)
    if letters:
        return letters
    labelled = _LABELLED.match(s)
    if labelled is None:
        return None
    letter = labelled.group(1) or labelled.group(2)
    return [letter] if ord(letter) - ord("A") < n_options else None


# ----------------------------------------------------------------------------- last number
# Not after a letter, "_" or "^" (the digits of h2, x_1, m^2), nor inside "^{...}" / "_{...}".
_NOT_PART = r"(?=[-\\\d])(?<![A-Za-z_^\d])(?<!\^\{)(?<!_\{)"  # first a cheap look at one character
_NUMBER = re.compile(
    _NOT_PART + r"(?:"
    r"\d{1,2}:\d{2}(?:\s*[AaPp]\.?\s?[Mm]\b\.?)?"  # a time: 2:35, 2:35 PM, 2:35 p.m.
    r"|-?\\[dt]?frac\{-?\d+\}\{\d+\}"  # \frac{7}{4}
    r"|-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"  # 1,234.5  7/4
    r"(?:\s*(?:\\?%|°|\^\s*\{?\\circ\}?))?"  # 45%  90°  90^\circ
    r")"
)


def _number_rule(text: str) -> str | None:
    numbers = _NUMBER.findall(strip_markup(text))
    return numbers[-1].strip().rstrip(".") if numbers else None


# ----------------------------------------------------------------------------- cleaning
_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.DOTALL)


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


# ----------------------------------------------------------------------------- the rules
def _boxed_rule(text: str, problem: Problem) -> str | None:
    boxed = find_boxed(text)
    return _clean(boxed) if boxed is not None else None


_Rule = Callable[[str, Problem], "tuple[str, str] | None"]


def _named(rule: str, finder: Callable[[str, Problem], str | None]) -> _Rule:
    def apply(text: str, problem: Problem) -> tuple[str, str] | None:
        found = finder(text, problem)
        return (found, rule) if found else None

    return apply


_INNER_RULES: tuple[_Rule, ...] = (_named("boxed", _boxed_rule), _markers_rule)
_RULES: tuple[_Rule, ...] = (
    *_INNER_RULES,
    _named("choice_letter", _letter_rule),
    _named("last_number", lambda text, _: _number_rule(text)),
)


def find_answer(text: str, problem: Problem = FREE_FORM) -> tuple[str, str] | None:
    """Apply the extraction rules in order of trust; return (answer, rule) or None."""
    content = answer_tag_content(text)
    if content is not None:
        inner = _first_match(_INNER_RULES, strip_html(content), problem)
        answer = inner[0] if inner else _clean(content)
        if answer:
            return answer, "answer_tag"
        text = _ANSWER_TAGS.sub(" ", text)  # an empty answer tag must not shadow the text
    return _first_match(_RULES, strip_html(text), problem)


def _first_match(rules: Sequence[_Rule], text: str, problem: Problem) -> tuple[str, str] | None:
    for rule in rules:
        found = rule(text, problem)
        if found:
            return found
    return None
