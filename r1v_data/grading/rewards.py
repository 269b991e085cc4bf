"""Reward levels RM: trace → {0,…,5}, the scale iterative SFT selects on (τ = 2, 3, 4, 5).

Two pieces live here, both free of heavy imports:

- `rule_score`: the scorer used when no reward model or judge is named. It reads the flags the
  store already holds for a trace (verdict, think tags, truncation, repetition, token counts).
- `Calibration`: how a reward model's raw real-valued score becomes a level 0–5.

Rule rubric (`RULE_VERSION`; bump it whenever a rule or threshold below changes):

| level | meaning |
| --- | --- |
| 0 | unusable: the request failed (`error`), the completion is empty, or no answer was found |
| 1 | not verified correct, and malformed (no think block, think never closed, truncated, or looping) |
| 2 | not verified correct, well-formed (think closed, not truncated, no loop) |
| 3 | correct, but malformed (as for 1): the right answer in a broken trace |
| 4 | correct and well-formed with a minor issue: a near-empty think (< 20 characters) or a |
|   | completion using ≥ 90% of its token budget without being cut off |
| 5 | correct, think closed, not truncated, no loop, sane length: clean and correct |

"Not verified correct" is `wrong`, and also `unverifiable`, `timeout`, a verifier `error` or no
verdict at all: a level of 3 or more always means the verifier said `correct`. A trace with no
think block counts as malformed: the R1 format (and the GRPO format reward) needs one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from r1v_data.grading.traces import parse_completion

__all__ = [
    "CALIBRATION_KINDS",
    "LEVELS",
    "RULE_SCORER",
    "RULE_VERSION",
    "Calibration",
    "RuleScore",
    "rule_score",
]

RULE_SCORER = "rule"
RULE_VERSION = "rule/1"
LEVELS = 6  # 0..5

# A think shorter than this says nothing ("A. 10", "60": seen in the R1-V eval logs); real
# reasoning, even a terse line in Chinese, is longer.
MIN_THINK_CHARS = 20
# A completion that stopped by itself this close to its budget was nearly cut off: overthinking.
LONG_FRACTION = 0.9


@dataclass(frozen=True)
class RuleScore:
    """A level 0–5 and the rules that decided it, e.g. "correct, think closed, 812 tokens"."""

    value: int
    detail: str


def rule_score(trace: Mapping[str, Any], *, max_tokens: int | None = None) -> RuleScore:
    """Score one trace row (see `schemas/traces.json`) by the rubric in this module's docstring.

    Args:
        trace: a trace row. Flags missing from it (`think_closed`, `truncated`, `repetition`,
            and `think`/`answer` when their keys are absent) are recomputed from `text`.
        max_tokens: the completion budget; default: the row's `sampling.max_tokens`. Without a
            budget or a `completion_tokens` count the length rule does not apply.
    """
    t = _complete(trace)
    unusable = _unusable(t)
    if unusable:
        return RuleScore(0, unusable)
    issues = _format_issues(t)
    length = _length(t, max_tokens)
    notes = [*(issues or ["think closed"]), *([length[0]] if length[0] else [])]
    verdict = t.get("verdict")
    if verdict != "correct":
        label = "wrong" if verdict == "wrong" else f"unverified ({verdict or 'no verdict'})"
        return RuleScore(1 if issues else 2, ", ".join([label, *notes]))
    if issues:
        return RuleScore(3, ", ".join(["correct", *notes]))
    minor = _minor_issues(t, length[1])
    return RuleScore(4 if minor else 5, ", ".join(["correct", *notes, *minor]))


def _complete(trace: Mapping[str, Any]) -> dict[str, Any]:
    """The row with missing flags filled in by parsing its text (hand-written or partial rows)."""
    t = dict(trace)
    text = t.get("text")
    flags = ("think_closed", "truncated", "repetition")
    if isinstance(text, str) and (
        any(t.get(f) is None for f in flags) or not {"think", "answer"} <= t.keys()
    ):
        parsed = parse_completion(text, t.get("finish_reason"))
        for key in flags:
            if t.get(key) is None:
                t[key] = getattr(parsed, key)
        for key in ("think", "answer"):
            t.setdefault(key, getattr(parsed, key))  # a stored None means "none found": keep it
    return t


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def _unusable(t: Mapping[str, Any]) -> str | None:
    if not _blank(t.get("error")):
        return f"error: {' '.join(str(t['error']).split())[:80]}"
    if _blank(t.get("text")):
        return "empty completion"
    if _blank(t.get("answer")):
        return "no answer"
    return None


def _format_issues(t: Mapping[str, Any]) -> list[str]:
    issues = []
    if not t.get("think_closed"):
        issues.append("no think" if t.get("think") is None else "think unclosed")
    if t.get("truncated"):
        issues.append("truncated")
    if t.get("repetition"):
        issues.append("repetitive")
    return issues


def _length(t: Mapping[str, Any], max_tokens: int | None) -> tuple[str, float | None]:
    """("812/1024 tokens", 0.79): the length note and the fraction of the budget used."""
    tokens = t.get("completion_tokens")
    sampling = t.get("sampling")
    budget = max_tokens if max_tokens is not None else (sampling or {}).get("max_tokens")
    if not isinstance(tokens, int):
        return "", None
    if not isinstance(budget, int) or budget <= 0:
        return f"{tokens} tokens", None
    return f"{tokens}/{budget} tokens", tokens / budget


def _minor_issues(t: Mapping[str, Any], used: float | None) -> list[str]:
    minor = []
    think = (t.get("think") or "").strip()
    if len(think) < MIN_THINK_CHARS:
        minor.append(f"short think ({len(think)} chars)")
    if used is not None and used >= LONG_FRACTION:
        minor.append(f"near the budget ({used:.0%})")
    return minor


# ----------------------------------------------------------------------------- calibration
CALIBRATION_KINDS = ("linear", "cuts", "quantile")
_SIXTHS = tuple(i / LEVELS for i in range(1, LEVELS))


@dataclass(frozen=True)
class Calibration:
    """Maps a reward model's raw score to a level 0–5. Build one with `Calibration.parse`.

    Kinds and their specs:

    - `linear:LO,HI` — clamp to [LO, HI], scale to [0, 5], round half up: LO and below → 0, HI and
      above → 5; levels 1–4 each cover a fifth of the range, 0 and 5 a tenth.
    - `cuts:C1,C2,C3,C4,C5` — five ascending thresholds: below C1 → 0, from C1 → 1, …, from C5 → 5.
    - `quantile` or `quantile:Q1,…,Q5` — cut points are the Q-quantiles of the scored set's *own*
      raw scores (default the sixths: six levels of equal size). Levels are then relative to that
      set: the same trace can get another level among other traces, and level 5 means "in the
      top sixth", not "good". Fit it (`fit`, or `levels` on the whole set) before `level`.

    A raw score of NaN has no level (`levels` gives None for it; `level` raises ValueError);
    ±inf is a legitimate extreme (clamped; ignored when fitting quantiles).
    """

    kind: str
    points: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> Calibration:
        """Parse a CLI spec such as `linear:-5,5`, `cuts:-2,-1,0,1,2`, `quantile`."""
        kind, _, rest = spec.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in CALIBRATION_KINDS:
            raise ValueError(
                f"calibration {spec!r}: unknown kind {kind!r}; use linear:LO,HI, cuts:C1,…,C5 "
                "or quantile[:Q1,…,Q5]"
            )
        points = _numbers(spec, rest)
        if kind == "linear":
            if len(points) != 2 or not points[0] < points[1]:
                raise ValueError(f"calibration {spec!r}: linear needs two bounds LO,HI with LO < HI")
        elif kind == "cuts":
            _check_cuts(spec, points, "cuts needs five ascending thresholds C1,…,C5")
        elif not points:
            points = _SIXTHS
        else:
            _check_cuts(spec, points, "quantile takes five ascending fractions Q1,…,Q5")
            if points[0] < 0 or points[-1] > 1:
                raise ValueError(f"calibration {spec!r}: quantile fractions must lie in [0, 1]")
        return cls(kind, points)

    @property
    def spec(self) -> str:
        """The canonical spec string (the one scorer versions record)."""
        if self.kind == "quantile" and self.points == _SIXTHS:
            return "quantile"
        return f"{self.kind}:{','.join(format(p, '.15g') for p in self.points)}"

    def __str__(self) -> str:
        return self.spec

    @property
    def needs_fit(self) -> bool:
        return self.kind == "quantile"

    def fit(self, raws: Sequence[float]) -> Calibration:
        """For `quantile`, the `cuts` calibration at those quantiles of `raws` (only finite
        scores count); any other kind is returned as it is."""
        if not self.needs_fit:
            return self
        values = sorted(x for x in raws if math.isfinite(x))
        if not values:
            raise ValueError(f"calibration {self.spec!r}: no scores to compute quantiles from")
        return Calibration("cuts", tuple(_quantile(values, q) for q in self.points))

    def level(self, raw: float) -> int:
        """The level 0–5 of one raw score (a fitted or non-quantile calibration only)."""
        if self.needs_fit:
            raise ValueError("a quantile calibration must be fitted to the scores first (fit or levels)")
        if math.isnan(raw):
            raise ValueError("a NaN score has no level")
        if self.kind == "linear":
            lo, hi = self.points
            scaled = (min(max(raw, lo), hi) - lo) / (hi - lo) * (LEVELS - 1)
            return min(LEVELS - 1, math.floor(scaled + 0.5))  # half up: Python's round() is to even
        return sum(raw >= cut for cut in self.points)

    def levels(self, raws: Sequence[float]) -> list[int | None]:
        """Levels of a whole set (fitting a quantile calibration on it); None for NaN scores, and
        for every score when a quantile calibration finds no finite one to fit on."""
        if self.needs_fit and not any(math.isfinite(x) for x in raws):
            return [None] * len(raws)  # nothing to place cut points by
        fitted = self.fit(raws)
        return [None if math.isnan(x) else fitted.level(x) for x in raws]


def _numbers(spec: str, text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"calibration {spec!r}: {text.strip()!r} is not a comma-separated list of numbers"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"calibration {spec!r}: numbers must be finite")
    return values


def _check_cuts(spec: str, points: tuple[float, ...], need: str) -> None:
    # Equal neighbours are allowed (the level between them is empty), descending ones are not.
    if len(points) != LEVELS - 1 or any(a > b for a, b in pairwise(points)):
        raise ValueError(f"calibration {spec!r}: {need}")


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method) of sorted values."""
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)
