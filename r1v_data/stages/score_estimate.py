"""`score --judge SPEC --dry-run`: the judge requests a QDAM/VTIA run would send now (samples
whose scores for this judge are not cached yet), their expected tokens and their cost; nothing is
sent or written. Prompts are the real rubric prompts, counted by `pricing.prompt_tokens`; replies
at `judge_max_tokens`, an upper bound (a judge's JSON object is usually far shorter)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from r1v_data.backends import GenRequest, is_batch_spec, make_backend
from r1v_data.backends.pricing import cost, load_prices, price_for, prompt_tokens
from r1v_data.config import ScoreConfig
from r1v_data.errors import ConfigError
from r1v_data.grading import judge
from r1v_data.stages.score import _cached, _judge_messages, scorer_version  # the stage's own prompts
from r1v_data.store import Store


def estimate_score(cfg: ScoreConfig) -> dict[str, Any]:
    if not cfg.judge:
        raise ConfigError(
            "score --dry-run estimates a judge's cost: give --judge SPEC (local scoring is free)"
        )
    prices = load_prices(cfg.prices)
    backend = make_backend(cfg.judge, **cfg.judge_options)
    try:
        with Store.open(cfg.store) as store:
            ids = store.sample_ids(cfg.where, cfg.limit)
            lines = [
                _scorer_line(store, backend, scorer, ids, cfg, prices)
                for scorer in dict.fromkeys(cfg.scorers)
            ]
    finally:
        backend.close()
    usd = [line["usd"] for line in lines]
    total = {k: sum(line[k] for line in lines) for k in ("requests", "prompt_tokens", "completion_tokens")}
    return {"store": str(cfg.store), "problems": len(ids), "lines": lines,
            "total": {**total, "usd": None if None in usd else round(sum(usd), 4)}}  # fmt: skip


def _scorer_line(
    store: Store, backend: Any, scorer: str, ids: list[str], cfg: ScoreConfig, prices: Any
) -> dict[str, Any]:
    done = _cached(store, ids, scorer, scorer_version(scorer, backend.identity))
    todo = [i for i in ids if i not in done]
    sampling = replace(judge.JUDGE_SAMPLING, max_tokens=cfg.judge_max_tokens)
    requests = tokens = 0
    sql = "SELECT sample_id, question, images, caption FROM samples SEMI JOIN wanted USING (sample_id)"
    for sample in store.stream(sql, todo):
        messages, refusal = _judge_messages(sample, scorer, backend.supports_images)
        if not refusal:
            requests += 1
            tokens += prompt_tokens(GenRequest("", messages, sampling))
    batch = is_batch_spec(backend.spec)
    price = price_for(prices, backend.identity)
    completion = requests * cfg.judge_max_tokens
    return {"what": scorer, "teacher": backend.identity, "batch": batch, "requests": requests,
            "prompt_tokens": tokens, "completion_tokens": completion, "skipped": len(ids) - len(todo), "refused": 0,
            "completion_basis": "judge_max_tokens (an upper bound)",
            "price": price.model_dump() if price else None, "usd": cost(price, tokens, completion, batch)}  # fmt: skip
