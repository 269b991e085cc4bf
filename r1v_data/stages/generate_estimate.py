"""`generate --dry-run`: what a run would send now and what it would cost, without sending
anything or writing to the store.

It builds the same requests `run_generate` would (the same prompts, ids, skips of finished work
and refusals) and adds up their expected tokens: prompts as `pricing.prompt_tokens` counts them,
completions at this teacher's mean so far (from its traces in the store) or else at the
`max_tokens` limit, which is then an upper bound and said so. Later rounds and the reviser send
only what earlier ones left unsolved, so they are given at most: every problem once more.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from r1v_data.backends import Backend, is_batch_spec, make_backend
from r1v_data.backends.pricing import cost, load_prices, price_for, prompt_tokens
from r1v_data.config import GenerateConfig, Prices
from r1v_data.stages.generate import (  # the generate stage's own request building, shared
    _adaptive_controls,
    _finished_request_ids,
    _requests,
    _Run,
    _teacher_round,
)
from r1v_data.stages.generate_rows import GenerateResult
from r1v_data.store import Store

MIN_TRACES_FOR_MEAN = 10


class _NullWriter:
    """Refusals a dry run meets are counted, not written."""

    run_id = "dry-run"

    def add(self, row: dict[str, Any]) -> None:
        pass


def estimate_generate(cfg: GenerateConfig, backend: Backend | None = None) -> dict[str, Any]:
    prices = load_prices(cfg.prices)
    with Store.open(cfg.store) as store:
        problems = store.sample_ids(cfg.where, cfg.limit)
        controls = _adaptive_controls(store, cfg, problems)
        owned = backend is None
        backend = backend or make_backend(cfg.teacher, **cfg.teacher_options)
        try:
            done, _ = _finished_request_ids(store, cfg.retry_failed)
            run = _Run(store, cfg, done, _NullWriter(), None, GenerateResult("dry-run", backend.identity), None,
                       None, controls)  # type: ignore[arg-type]  # fmt: skip
            first = _round_one(run, backend, problems, prices)
            lines = [first, *_later(cfg, store, backend, first, len(problems), prices)]
        finally:
            if owned:
                backend.close()
    return {"store": str(cfg.store), "problems": len(problems), "lines": lines, "total": _total(lines)}


def _round_one(run: _Run, backend: Backend, problems: list[str], prices: Prices) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    requests = tokens = 0
    for request, _ in _requests(run, backend, _teacher_round(run, backend, 1, problems), counts):
        requests += 1
        tokens += prompt_tokens(request)
    each, basis = _expected_completion(run.store, backend.identity, run.cfg.sampling.max_tokens)
    line = _line("round 1", backend, requests, tokens, requests * each, basis, prices)
    return {**line, "skipped": counts["skipped"], "refused": counts["refused"]}


def _later(cfg: GenerateConfig, store: Store, teacher: Backend, first: dict[str, Any], problems: int,
           prices: Prices) -> list[dict[str, Any]]:  # fmt: skip
    """Rounds 2.. and the reviser, at most: every problem unsolved."""
    out = []
    per_request = first["prompt_tokens"] / first["requests"] if first["requests"] else 0
    each, basis = _expected_completion(store, teacher.identity, cfg.sampling.max_tokens)
    if cfg.rounds > 1:
        n = problems * cfg.n * (cfg.rounds - 1)
        out.append(_line("round 2 (at most)" if cfg.rounds == 2 else f"rounds 2-{cfg.rounds} (at most)", teacher, n, round(n * per_request), n * each, basis,
                         prices))  # fmt: skip
    if cfg.reviser:
        reviser = teacher if cfg.reviser == teacher.spec else make_backend(cfg.reviser, **cfg.reviser_options)
        try:
            mine, my_basis = _expected_completion(store, reviser.identity, cfg.sampling.max_tokens)
            prompt = round(problems * (per_request + each))  # the problem and its wrong trace
            out.append(
                _line("revise (at most)", reviser, problems, prompt, problems * mine, my_basis, prices)
            )
        finally:
            if reviser is not teacher:
                reviser.close()
    return out


def _line(what: str, backend: Backend, requests: int, prompt: int, completion: int, basis: str,
          prices: Prices) -> dict[str, Any]:  # fmt: skip
    batch = is_batch_spec(backend.spec)
    price = price_for(prices, backend.identity)
    return {"what": what, "teacher": backend.identity, "batch": batch, "requests": requests,
            "prompt_tokens": prompt, "completion_tokens": completion, "completion_basis": basis,
            "price": price.model_dump() if price else None, "usd": cost(price, prompt, completion, batch)}  # fmt: skip


def _expected_completion(store: Store, identity: str, max_tokens: int) -> tuple[int, str]:
    sql = "SELECT avg(completion_tokens), count(*) FROM traces WHERE teacher = ? AND completion_tokens IS NOT NULL"
    mean, n = store.query(sql, params=[identity])[1][0]
    if n >= MIN_TRACES_FOR_MEAN:
        return round(mean), f"mean of {n} traces"
    return max_tokens, "max_tokens (an upper bound)"


def _total(lines: list[dict[str, Any]]) -> dict[str, Any]:
    usd = [line["usd"] for line in lines]
    return {
        "requests": sum(line["requests"] for line in lines),
        "prompt_tokens": sum(line["prompt_tokens"] for line in lines),
        "completion_tokens": sum(line["completion_tokens"] for line in lines),
        "usd": None if None in usd else round(sum(usd), 4),
    }
