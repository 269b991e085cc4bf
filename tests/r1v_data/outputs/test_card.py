"""The dataset card's length table, counted per token value (bounded memory), says what numpy says
over every trace's length."""

from __future__ import annotations

import random

import numpy as np

from r1v_data.outputs.card import TraceStats, _lengths


def test_lengths_from_value_counts_match_numpy_over_every_trace() -> None:
    rng = random.Random(0)
    tokens = [rng.choice([rng.randint(0, 40), rng.randint(0, 70_000)]) for _ in range(2_001)]
    stats = TraceStats()
    for t in tokens:
        stats.add({"teacher": "t", "verifier": "v", "tokens": t, "completion_tokens": t or None})
    assert len(stats.tokens) < len(tokens)  # repeated lengths are counted, not kept
    p10, p50, p90, p99 = np.percentile(tokens, [10, 50, 90, 99])
    row = f"| {len(tokens):,} | {min(tokens)} | {round(p10)} | {round(p50)} | {round(p90)} | {round(p99)} | {max(tokens)} | {round(float(np.mean(tokens)), 1)} |"
    card = _lengths(stats)
    assert row in card
    assert f"{tokens.count(0):,} traces had no token count" in card
    ones = sum(1 for t in tokens if t <= 1)  # the first bucket: 0 and 1 tokens
    assert f"| 1–1 | {ones:,} |" in card
