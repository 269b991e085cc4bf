"""DRLC, the dynamic repetition-penalty controller of AL-CoTD (Skywork R1V, DESIGN §1.2).

Scores are min-max normalised over the dataset being generated, then combined into the
teacher's per-sample repetition penalty

    P = min(2, exp(alpha * (1 - (Sv + beta*St + gamma*SI) / (1 + beta + gamma))))

so hard, image-integrated questions (high scores) get P near 1 and long chains, and easy ones
get a higher penalty and short chains. The paper gives no alpha, beta, gamma; the defaults here
make P span exactly [1, 2] (alpha = ln 2) and weigh the three scores equally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_ALPHA = math.log(2.0)
MAX_PENALTY = 2.0
NEUTRAL = 0.5  # the normalised value when every sample has the same score: no information either way


def min_max(values: Sequence[float | None]) -> list[float | None]:
    """Normalise to [0, 1] over the dataset; missing values stay missing; all equal -> NEUTRAL."""
    present = [v for v in values if v is not None]
    if not present:
        return [None] * len(values)
    low, high = min(present), max(present)
    if high == low:
        return [None if v is None else NEUTRAL for v in values]
    return [None if v is None else (v - low) / (high - low) for v in values]


def penalty(
    s_v: float, s_t: float, s_i: float, *, alpha: float = DEFAULT_ALPHA, beta: float = 1.0, gamma: float = 1.0
) -> float:
    """P for normalised scores in [0, 1] (missing scores should be passed as NEUTRAL)."""
    if beta < 0 or gamma < 0 or alpha < 0:
        raise ValueError("alpha, beta and gamma must be non-negative")
    combined = (s_v + beta * s_t + gamma * s_i) / (1.0 + beta + gamma)
    return min(MAX_PENALTY, math.exp(alpha * (1.0 - combined)))


def penalties(
    s_v: Sequence[float | None],
    s_t: Sequence[float | None],
    s_i: Sequence[float | None],
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> list[float]:
    """P for every sample of a dataset, from raw scores (normalised here, over the dataset)."""
    if not len(s_v) == len(s_t) == len(s_i):
        raise ValueError("score lists differ in length")
    columns = [min_max(s_v), min_max(s_t), min_max(s_i)]
    return [
        penalty(*(NEUTRAL if x is None else x for x in row), alpha=alpha, beta=beta, gamma=gamma)
        for row in zip(*columns, strict=True)
    ]
