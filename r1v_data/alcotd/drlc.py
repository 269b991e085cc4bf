"""DRLC, the dynamic repetition-penalty controller of AL-CoTD (Skywork R1V, DESIGN §1.2).

Scores are min-max normalised over the dataset (every scored sample of the store), then
combined into the teacher's per-sample repetition penalty

    P = min(2, exp(alpha * (1 - (Sv + beta*St + gamma*SI) / (1 + beta + gamma))))

so hard, image-integrated questions (high scores) get P near 1 and long chains, and easy ones
get a higher penalty and short chains. The paper gives no alpha, beta, gamma. r1v also takes the
range directly: P = PMIN * exp(alpha * (1 - score)) with alpha = ln(PMAX / PMIN) (`floor` = PMIN),
which is the paper's formula when PMIN = 1; the configured default range is the one measured to
keep a small teacher coherent (`r1v_data.config.DEFAULT_PENALTY_RANGE`, `r1v-data calibrate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from r1v_data.config import DRLCConfig
    from r1v_data.store import Store

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


def combined(s_v: float, s_t: float, s_i: float, *, beta: float = 1.0, gamma: float = 1.0) -> float:
    """The weighted mean of the normalised scores: 0 for the easiest sample, 1 for the hardest."""
    if beta < 0 or gamma < 0:
        raise ValueError("beta and gamma must be non-negative")
    return (s_v + beta * s_t + gamma * s_i) / (1.0 + beta + gamma)


def penalty(
    s_v: float,
    s_t: float,
    s_i: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    beta: float = 1.0,
    gamma: float = 1.0,
    floor: float = 1.0,
) -> float:
    """P for normalised scores in [0, 1] (missing scores should be passed as NEUTRAL); `floor` is
    the hardest sample's penalty (1 in the paper)."""
    if alpha < 0:
        raise ValueError("alpha must be non-negative")
    score = combined(s_v, s_t, s_i, beta=beta, gamma=gamma)
    return min(MAX_PENALTY, floor * math.exp(alpha * (1.0 - score)))


def token_budget(score: float, low: int, high: int) -> int:
    """Beyond the paper: a completion budget linear in the combined score, LOW for the easiest."""
    return round(low + (high - low) * min(1.0, max(0.0, score)))


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
    return [penalty(*row, alpha=alpha, beta=beta, gamma=gamma) for row in normalised_rows(s_v, s_t, s_i)]


def normalised_rows(
    s_v: Sequence[float | None], s_t: Sequence[float | None], s_i: Sequence[float | None]
) -> list[tuple[float, float, float]]:
    """(Ŝv, Ŝt, ŜI) per sample: min-max over the dataset, a missing score counted as NEUTRAL."""
    columns = [min_max(s_v), min_max(s_t), min_max(s_i)]
    return [tuple(NEUTRAL if x is None else x for x in row) for row in zip(*columns, strict=True)]  # type: ignore[misc]


# ---- the controller over a store ----------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """What DRLC sets for one sample."""

    penalty: float
    score: float  # the combined normalised score, 0 = easiest of the dataset, 1 = hardest
    max_tokens: int | None = None  # only with a token budget range


COMBINED_NAMES = ("S_v", "S_t", "S_I")


def read_scores(store: Store) -> dict[str, dict[str, float]]:
    """The latest non-null S_v, S_t and S_I of every scored sample (from whichever QDAM/VTIA run,
    local or judged, wrote last)."""
    sql = f"""SELECT sample_id, name, arg_max(value, created_at) AS value FROM scores
              WHERE request_id IS NULL AND scorer IN ('qdam', 'vtia') AND value IS NOT NULL
                AND name IN {COMBINED_NAMES}
              GROUP BY sample_id, name"""
    out: dict[str, dict[str, float]] = {}
    for row in store.stream(sql, None, batch=65536):
        out.setdefault(row["sample_id"], {})[row["name"]] = row["value"]
    return out


def controls(store: Store, ids: list[str], cfg: DRLCConfig) -> tuple[dict[str, Control], int]:
    """DRLC's parameters for each of `ids`, and how many of them have no score (they get the
    neutral value). The dataset the scores are normalised over is every scored sample of the
    store, not this run's selection: a sample's penalty, and so its request ids, must not change
    with --limit or --where, or a resumed run would regenerate instead of skipping."""
    found = read_scores(store)
    scored = list(found)
    columns = [[found[i].get(name) for i in scored] for name in COMBINED_NAMES]
    normalised = dict(zip(scored, normalised_rows(*columns), strict=True))
    neutral = (NEUTRAL, NEUTRAL, NEUTRAL)
    out = {}
    for sample_id in ids:
        s_v, s_t, s_i = normalised.get(sample_id, neutral)
        score = combined(s_v, s_t, s_i, beta=cfg.beta, gamma=cfg.gamma)
        p = penalty(s_v, s_t, s_i, alpha=cfg.slope, beta=cfg.beta, gamma=cfg.gamma, floor=cfg.floor)
        budget = token_budget(score, *cfg.max_tokens_range) if cfg.max_tokens_range else None
        out[sample_id] = Control(round(p, 4), score, budget)  # rounded: P is part of request ids
    return out, sum(1 for i in ids if i not in found)
