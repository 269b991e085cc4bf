"""Calibrating DRLC for one teacher: what a repetition penalty does to its chains, and the penalty
range that meets a target.

The paper gives no alpha, and a penalty that suits a 32B reasoner wrecks a small model:
transformers and vLLM divide the logit of every token already seen, the prompt's included, so a
high penalty stops a model from reusing the words of its own question and even the `</think>` and
`\\boxed{}` it was asked to write. `r1v-data calibrate` runs the teacher at a few fixed penalties
on a sample spread over DRLC's difficulty order; this module groups what came back into thirds
(easiest, middle, hardest by the combined score), sums it up per penalty and group, and fits
`[PMIN, PMAX]`: PMIN is the lowest penalty tried (what the hardest samples get), PMAX the lowest
penalty that shortens the easiest third by the target without costing accuracy or form there.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

GROUPS = ("easiest third", "middle third", "hardest third")
ALL = "all"
_WORD = re.compile(r"[a-z]{4,}")


@dataclass(frozen=True)
class Outcome:
    """One completion at one penalty."""

    penalty: float
    group: str
    tokens: int  # completion tokens
    correct: bool
    formed: bool  # a closed think and an answer in the asked form (\\boxed{} or <answer>)
    reuse: float  # share of the question's words the completion uses again


@dataclass(frozen=True)
class Cell:
    """Means over the outcomes of one penalty and one group."""

    penalty: float
    group: str
    n: int
    tokens: float
    accuracy: float
    formed: float
    reuse: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What the fitted range must do on the easiest third, against the lowest penalty tried."""

    shorten: float = 0.3  # at least this share fewer completion tokens
    max_accuracy_loss: float = 0.0  # accuracy may fall by at most this (absolute)
    max_formed_loss: float = 0.1  # the share of well-formed traces may fall by at most this


@dataclass(frozen=True)
class Fit:
    penalty_range: tuple[float, float]
    met: bool
    why: str


def spread(ranked: Sequence[str], n: int) -> list[str]:
    """`n` ids evenly spaced over `ranked` (easiest first), both ends included."""
    if n >= len(ranked):
        return list(ranked)
    if n == 1:
        return [ranked[len(ranked) // 2]]
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def thirds(ranked: Sequence[str]) -> dict[str, str]:
    """Each id's group: the first third of `ranked` (easiest first) is the easiest."""
    return {sid: GROUPS[min(2, 3 * i // max(1, len(ranked)))] for i, sid in enumerate(ranked)}


def question_reuse(question: str, completion: str) -> float:
    """The share of the question's distinct words (4+ letters) that the completion repeats: a
    chain that can no longer name what it reasons about has lost the thread."""
    asked = set(_WORD.findall(question.lower()))
    if not asked:
        return 1.0
    return len(asked & set(_WORD.findall(completion.lower()))) / len(asked)


def summarise(outcomes: Iterable[Outcome]) -> list[Cell]:
    """One cell per (penalty, group) and per penalty over all groups, lowest penalty first."""
    by_key: dict[tuple[float, str], list[Outcome]] = {}
    for o in outcomes:
        by_key.setdefault((o.penalty, o.group), []).append(o)
        by_key.setdefault((o.penalty, ALL), []).append(o)
    order = {g: i for i, g in enumerate((*GROUPS, ALL))}
    return [
        _cell(p, g, rows)
        for (p, g), rows in sorted(by_key.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))
    ]


def _cell(penalty: float, group: str, rows: list[Outcome]) -> Cell:
    def mean(values: Iterable[float]) -> float:
        return round(statistics.fmean(values), 3)

    return Cell(penalty, group, len(rows), mean(o.tokens for o in rows), mean(o.correct for o in rows),
                mean(o.formed for o in rows), mean(o.reuse for o in rows))  # fmt: skip


def fit(cells: Sequence[Cell], target: Target) -> Fit:
    """[PMIN, PMAX] for `target` (see the module docstring); when no penalty meets it, the one that
    shortens most while keeping accuracy and form, or no adaptation at all, and why."""
    easy = {c.penalty: c for c in cells if c.group == GROUPS[0]}
    if not easy:
        raise ValueError("no outcome in the easiest third")
    low = min(easy)
    base = easy[low]

    def keeps(c: Cell) -> bool:
        return (
            c.accuracy >= base.accuracy - target.max_accuracy_loss
            and c.formed >= base.formed - target.max_formed_loss
        )

    higher = [easy[p] for p in sorted(easy) if p > low]
    for c in higher:
        if keeps(c) and c.tokens <= (1 - target.shorten) * base.tokens:
            return Fit((low, c.penalty), True, _shortened(c, base))
    kept = [c for c in higher if keeps(c)]
    if not kept:
        return Fit((low, low), False, f"every penalty above {low} cost the easiest third accuracy or form")
    best = min(kept, key=lambda c: c.tokens)
    return Fit(
        (low, best.penalty),
        False,
        "the most it shortened keeping accuracy and form: " + _shortened(best, base),
    )


def _shortened(c: Cell, base: Cell) -> str:
    cut = 1 - c.tokens / base.tokens if base.tokens else 0.0
    return (
        f"at {c.penalty} the easiest third is {cut:.0%} shorter ({base.tokens:.0f} -> {c.tokens:.0f} tokens), "
        f"accuracy {base.accuracy:.0%} -> {c.accuracy:.0%}, well-formed {base.formed:.0%} -> {c.formed:.0%}"
    )
