"""Local estimators for the judged QDAM and VTIA properties: heuristics, no model.

They stand in for a judge when none is named, built on the cues the R1V paper describes:
question length and symbol density, multi-hop connectives, why/how versus what/where, the
number of referenced objects and domain terms. Each property is a number in [0, 1] (higher =
more: a harder question, more necessary image, deeper integration). They are heuristics with
stated word lists and scales, not learned models; `ESTIMATOR_VERSION` changes when they do, and
`r1v-data score` reports how well they agree with the source's difficulty levels and with a
judge's scores when the store holds both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

ESTIMATOR_VERSION = "local/1"

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_MATH_SPAN = re.compile(r"\$[^$]+\$")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_PLACEHOLDER = re.compile(r"<image\d+>")
_POINT = re.compile(r"(?<![A-Za-z])[A-Z](?![a-z])")  # A, B, AB's letters: named points and objects
_MATH_SYMBOLS = set("=+-*/^_<>≤≥≠∠°π√∑∫∞·×÷|()[]{}")

CONNECTIVES = (
    "if", "then", "given", "such that", "so that", "suppose", "assume", "knowing", "since",
    "therefore", "respectively", "each", "every", "both", "after", "before", "while", "whereas",
    "unless", "at least", "at most", "exactly", "otherwise", "instead", "remaining", "rest",
)  # fmt: skip
DEEP_ASKS = ("why", "how ", "prove", "show that", "explain", "determine", "find", "calculate", "compute",
             "what is the value", "what is the area", "what is the sum", "what is the probability",
             "smallest", "largest", "maximum", "minimum", "how much", "ratio")  # fmt: skip
LOOKUPS = ("what color", "what colour", "which color", "where is", "where are", "what is the name",
           "is there", "are there", "what shape", "what material", "what size", "how many")  # fmt: skip
DOMAIN_TERMS = (
    "angle", "triangle", "circle", "radius", "diameter", "area", "perimeter", "polygon", "parallel",
    "perpendicular", "tangent", "chord", "arc", "prime", "integer", "probability", "function",
    "derivative", "integral", "equation", "polynomial", "sequence", "ratio", "fraction", "divisible",
    "remainder", "modulo", "vertex", "vertices", "hexagon", "pentagon", "cube", "volume", "sphere",
    "cylinder", "cone", "diagonal", "congruent", "midpoint", "bisector", "inscribed", "square root",
    "segment", "symmetric", "rotation", "reflection", "graph", "coordinate", "axis", "slope", "median",
    "mean", "variance", "logarithm", "exponent", "sum", "product", "digit", "shaded", "edge", "face",
)  # fmt: skip
IMAGE_REFS = ("figure", "diagram", "picture", "image", "shown", "graph", "chart", "below", "above",
              "drawing", "grid", "map", "photo", "plot", "table", "pattern")  # fmt: skip
RELATIONS = ("left of", "right of", "behind", "in front", "between", "adjacent", "next to", "inside",
             "outside", "opposite", "same color", "same colour", "same size", "same shape", "same material",
             "touch", "overlap", "connected", "joined", "parallel", "perpendicular", "on top", "under")  # fmt: skip
OBJECT_NOUNS = ("cube", "sphere", "cylinder", "ball", "block", "car", "bus", "bicycle", "object", "square",
                "rectangle", "triangle", "circle", "line", "point", "piece", "tile", "card", "coin", "box",
                "dice", "die", "cell", "row", "column", "star", "flower", "house", "ladder", "path")  # fmt: skip


@dataclass(frozen=True)
class Cues:
    """The measurable features of one question, shared by every estimator."""

    words: int
    symbol_density: float  # math symbols, digits and LaTeX commands per character
    latex: int  # LaTeX commands plus $...$ spans
    numbers: int
    connectives: int
    deep_asks: int
    lookups: int
    domain_terms: int
    image_refs: int
    relations: int
    objects: int  # distinct named points/letters plus object nouns
    has_question: bool  # ends in "?" or reads as an instruction
    balanced: bool  # $ and braces balanced


# The cues of a question this long have all saturated (its length alone marks it), and reading
# further made `score` take minutes on a 50 MB question: only this much of the text is read.
MAX_CHARS = 20_000


def cues(question: str) -> Cues:
    text = _PLACEHOLDER.sub(" ", question[:MAX_CHARS])
    lower = " " + " ".join(text.lower().split()) + " "
    words = _WORD.findall(text)
    symbols = sum(ch in _MATH_SYMBOLS or ch.isdigit() for ch in text) + len(_LATEX_CMD.findall(text))
    points = {p for span in _MATH_SPAN.findall(text) for p in _POINT.findall(span)}
    points |= set(re.findall(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])", _MATH_SPAN.sub(" ", text))) - {"A", "I"}
    return Cues(
        words=len(words),
        symbol_density=symbols / max(1, len(text)),
        latex=len(_LATEX_CMD.findall(text)) + len(_MATH_SPAN.findall(text)),
        numbers=len(_NUMBER.findall(text)),
        connectives=_count(lower, CONNECTIVES),
        deep_asks=_count(lower, DEEP_ASKS),
        lookups=_count(lower, LOOKUPS),
        domain_terms=_count(lower, DOMAIN_TERMS),
        image_refs=_count(lower, IMAGE_REFS),
        relations=_count(lower, RELATIONS),
        objects=len(points) + _count(lower, OBJECT_NOUNS),
        has_question="?" in text
        or bool(re.search(r"\b(find|compute|calculate|determine|prove|show)\b", lower)),
        balanced=text.count("$") % 2 == 0 and text.count("{") == text.count("}"),
    )


def _count(lower: str, phrases: tuple[str, ...]) -> int:
    # whole-word matches; a phrase may end in a space ("how ") to exclude "however"
    return sum(len(re.findall(r"(?<![a-z])" + re.escape(p) + (r"" if p.endswith(" ") else r"(?![a-z])"), lower))
               for p in phrases)  # fmt: skip


def _sat(x: float, scale: float) -> float:
    """0 at 0, 1 - 1/e at `scale`, towards 1 after: cues count, but with diminishing returns."""
    return 1.0 - math.exp(-max(0.0, x) / scale)


def question_quality(c: Cues) -> float:
    """Well-formedness: a real question of sane length, balanced math, mostly words."""
    score = 1.0
    if c.words < 5:
        score -= 0.4
    if c.words > 400:
        score -= 0.3
    if not c.has_question:
        score -= 0.2
    if not c.balanced:
        score -= 0.2
    if c.symbol_density > 0.5:
        score -= 0.2  # mostly symbols: likely extraction debris
    return max(0.0, score)


def difficulty(c: Cues) -> float:
    """Longer, more symbolic, more constrained questions in technical vocabulary are harder."""
    parts = (
        _sat(c.words, 45),
        _sat(c.symbol_density, 0.06),
        _sat(c.latex + c.domain_terms, 4),
        _sat(c.connectives, 3),
        _sat(c.numbers, 5),
    )
    return sum(parts) / len(parts)


def reasoning_demand(c: Cues) -> float:
    """Why/how/find asks and multi-hop connectives demand reasoning; look-ups and counts less."""
    asks = _sat(c.deep_asks, 1.5) * (1.0 - 0.5 * _sat(c.lookups, 1.0))
    return (2 * asks + _sat(c.connectives, 3) + _sat(c.latex + c.domain_terms, 4)) / 4


def image_necessity(c: Cues, n_images: int) -> float:
    """How much the answer depends on the picture: 0 without one; referenced pictures and few
    numbers in the text (the data must be in the image) raise it."""
    if n_images == 0:
        return 0.0
    referenced = _sat(c.image_refs + (n_images - 1), 1.0)
    self_contained = _sat(c.numbers + c.latex, 6)  # the text carries its own data
    return min(1.0, 0.35 + 0.45 * referenced + 0.2 * (1.0 - self_contained) + 0.1 * _sat(n_images - 1, 1))


def integration(c: Cues, n_images: int) -> float:
    """VTIA: why/how questions over several related objects integrate the image deeply;
    what/where look-ups little. 0 without an image."""
    if n_images == 0:
        return 0.0
    objects = _sat(c.objects, 4)
    relations = _sat(c.relations + c.connectives, 3)
    asks = _sat(c.deep_asks, 1.5) * (1.0 - 0.6 * _sat(c.lookups, 1.0))
    return (objects + relations + asks) / 3


def estimate(sample: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Every judged property of one sample, each with a short detail naming its strongest cues."""
    c = cues(sample["question"])
    n_images = len(sample.get("images") or [])
    detail = (
        f"words={c.words} symbols={c.symbol_density:.3f} latex={c.latex} numbers={c.numbers} "
        f"connectives={c.connectives} asks={c.deep_asks} lookups={c.lookups} domain={c.domain_terms} "
        f"objects={c.objects} relations={c.relations} image_refs={c.image_refs} images={n_images}"
    )
    values = {
        "question_quality": question_quality(c),
        "difficulty": difficulty(c),
        "reasoning_demand": reasoning_demand(c),
        "image_necessity": image_necessity(c, n_images),
        "integration": integration(c, n_images),
    }
    return {name: (round(v, 6), detail) for name, v in values.items()}
