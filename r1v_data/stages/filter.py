"""`run_filter`: select the traces to train on, and say why every other one was dropped.

The selection rule of R1V's iterative SFT (DESIGN §1.3), `D_t = {x : RM(x) >= tau_t} ∪ E_{t-1}`,
after the sample rules. In order, the first rule that applies decides a trace:

1. its sample is a duplicate (`duplicate of ...`) or contaminated (`contamination: ...`);
2. the user's `--where` expression is not true for it (run by DuckDB on a read-only, sandboxed
   copy of the candidate columns: no file or network access);
3. it was cut off at the token limit (unless `keep_truncated`), or is longer than
   `max_completion_tokens`;
4. with no reward threshold (no `min_score`, no `iteration`), it is not verified correct, unless
   `keep_wrong`: a plain `filter` never lets a wrong answer into the training data;
5. its reward level is below tau, unless it is a correct trace of a sample in the error set
   E_{t-1} (the samples whose latest trace from `errors_from` is not correct): those are kept
   whatever their reward, and a wrong trace is never kept for being in E;
6. best-k: at most k traces per sample, best reward first, then correct, then shorter.

Every candidate trace and every sample gets a decision row (kept or not, the rule in `stage`, the
reason); the latest filter run's rows are the current selection. Failed requests and refusals
are not candidates (they are not completions); the traces of the `errors_from` run itself are
the student's answers, evidence for E_{t-1}, not training data, and are left out too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from r1v_data import __version__, executors
from r1v_data.config import FilterConfig
from r1v_data.curation.sample_checks import SampleDrop, sample_drops
from r1v_data.errors import ConfigError, Interrupted, QueryError
from r1v_data.executors import make_executor
from r1v_data.grading.reward_scoring import (
    JUDGE_SCORER,
    Reward,
    candidate_traces,
    judge_spec,
    parse_reward,
    score_rewards,
)
from r1v_data.stages.filter_rewards import model_runner
from r1v_data.store import PartWriter, Store, sandbox, utcnow

Progress = Callable[[str], None]

_CANDIDATES = f"""
SELECT t.request_id, t.sample_id, t.teacher, t.round, t.sample_index, t.run_id AS trace_run_id,
       t.provenance, t.verdict, t.finish_reason, t.prompt_tokens, t.completion_tokens, t.think_closed,
       t.truncated, t.repetition, length(t.think) AS think_chars, length(t.text) AS text_chars,
       r.value AS reward, s.source, s.subject, s.difficulty, s.answer_type, len(s.images) AS n_images
FROM (SELECT request_id, sample_id, teacher, round, sample_index, run_id, provenance, verdict, finish_reason,
             prompt_tokens, completion_tokens, think_closed, truncated, repetition, think, text, created_at
      FROM traces WHERE {candidate_traces()}
      QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY created_at DESC) = 1) t
JOIN samples s USING (sample_id)
LEFT JOIN (SELECT request_id, arg_max(value, created_at) AS value FROM scores
           WHERE scorer = $scorer AND version = $version AND name = 'reward' GROUP BY request_id) r
     USING (request_id)"""

_ERROR_SET = """
SELECT sample_id FROM traces WHERE error IS NULL AND finish_reason IS DISTINCT FROM 'refused'
                             AND (run_id = $errors OR teacher = $errors)
GROUP BY sample_id HAVING arg_max(verdict, (created_at, round, sample_index)) IS DISTINCT FROM 'correct'"""

_DECIDE = """
WITH c AS (
    SELECT c.*, d.stage AS sample_stage, d.reason AS sample_reason, e.sample_id IS NOT NULL AS in_errors,
           COALESCE(({where}), false) AS where_ok,
           -- imported traces may carry no token count: about 4 characters a token then
           coalesce(completion_tokens, text_chars // 4) AS tokens
    FROM candidates c LEFT JOIN sample_drops d USING (sample_id) LEFT JOIN error_set e USING (sample_id)
), ruled AS (
    SELECT *, CASE
        WHEN sample_reason IS NOT NULL THEN sample_stage
        WHEN NOT where_ok THEN 'where'
        WHEN truncated AND NOT $keep_truncated THEN 'truncation'
        WHEN tokens > $max_tokens THEN 'length'
        WHEN $only_correct AND verdict IS DISTINCT FROM 'correct' THEN 'verdict'
        WHEN reward IS NULL THEN 'reward'
        WHEN reward < $tau AND NOT (in_errors AND verdict = 'correct') THEN 'reward'
    END AS rule FROM c
), ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY sample_id ORDER BY rule IS NULL DESC, reward DESC NULLS LAST, verdict = 'correct' DESC,
                 completion_tokens ASC NULLS LAST, request_id) AS rank FROM ruled
)
SELECT sample_id, request_id,
       CASE WHEN rule IS NULL AND rank > $best_k THEN 'best-k' ELSE coalesce(rule, 'selected') END AS stage,
       rule IS NULL AND rank <= $best_k AS kept,
       CASE
         WHEN rule IN ('dedup', 'decontamination') THEN sample_reason
         WHEN rule = 'where' THEN 'where: not (' || $where_text || ')'
         WHEN rule = 'truncation' THEN 'truncated: cut off at the token limit'
         WHEN rule = 'length' THEN format('too long: {{}}{{}} completion tokens > {{}}',
                                          CASE WHEN completion_tokens IS NULL THEN '~' ELSE '' END, tokens, $max_tokens)
         WHEN rule = 'verdict' THEN format('not verified correct ({{}}): with no --min-score/--iteration only '
                                           || 'correct traces are kept (--keep-wrong keeps the others)',
                                           coalesce(verdict, 'no verdict'))
         WHEN rule = 'reward' AND reward IS NULL THEN 'reward missing: the scorer failed on this trace'
         WHEN rule = 'reward' THEN format('reward below threshold: {{}} < tau {{}}', reward::INT, $tau)
         WHEN rank > $best_k THEN format('best-k: rank {{}} of its sample > k = {{}}', rank, $best_k)
         WHEN in_errors AND reward < $tau THEN format('error set E_(t-1): a correct trace of a sample wrong in {{}} (reward {{}})', $errors, reward::INT)
         ELSE format('reward {{}} >= tau {{}}', reward::INT, $tau)
       END AS reason
FROM ranked"""


@dataclass
class FilterResult:
    run_id: str
    tau: int
    reward: str
    selection: str  # what the traces were kept by, in words
    samples: int = 0
    samples_dropped: Counter[str] = field(default_factory=Counter)  # per rule
    traces: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # traces per rule
    rewards: dict[str, int] = field(default_factory=dict)
    error_set: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


def run_filter(cfg: FilterConfig, progress: Progress | None = None) -> FilterResult:
    reward = parse_reward(cfg.reward, cfg.calibration, cfg.reward_options)
    executors.require(cfg.executor, judge_spec(reward) if reward.scorer == JUDGE_SCORER else None)
    say = progress or (lambda _: None)
    with Store.open(cfg.store, write=True) as store:
        check_where(store, cfg, reward)  # a malformed --where is refused before anything is written
        benchmarks = _benchmarks(cfg)
        errors = _error_set(store, cfg)
        _require_traces(store, cfg)
        run_id = store.begin_run("filter")
        result = FilterResult(run_id, cfg.tau, reward.version, _selection(cfg), error_set=len(errors))
        start, status = time.perf_counter(), "failed"
        try:
            with (
                store.writer("scores", run_id, flush_rows=65536) as scores,
                closing(make_executor(cfg.executor)) as executor,
            ):
                say("scoring rewards")
                run_model = model_runner(executor, scores, cfg.reward_options, cfg.judge_max_tokens)
                result.rewards, levels = score_rewards(
                    store,
                    scores,
                    reward,
                    cfg.reward_options,
                    cfg.errors_from,
                    cfg.judge_max_tokens,
                    run_model,
                )
                reward = replace(reward, version=levels)
                say("checking samples")
                drops = _sample_drops(store, scores, cfg, benchmarks)
            say("selecting traces")
            decisions = _decide(_candidates(store, cfg, reward), drops, errors, cfg)
            _write_decisions(store, run_id, decisions, drops, result)
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"  # decisions are written in one step: none of this run's are kept
            raise Interrupted(f"filter run {run_id} kept its cached rewards; no decisions") from exc
        finally:
            result.seconds = time.perf_counter() - start
            manifest = {"command": "filter", "r1v_version": __version__, "run_id": run_id,
                        "config": cfg.model_dump(mode="json"), "reward": reward.version,
                        "benchmarks": [b.describe() for b in benchmarks], "counts": result.as_dict()}  # fmt: skip
            store.finish_run(run_id, status, result.as_dict(), manifest)
    return result


def _selection(cfg: FilterConfig) -> str:
    if cfg.only_correct:
        return "verified-correct traces only (no --min-score/--iteration; --keep-wrong keeps the others)"
    if cfg.keep_wrong:
        return "every trace, wrong ones included (--keep-wrong)"
    return f"reward level >= tau {cfg.tau}"


def _require_traces(store: Store, cfg: FilterConfig) -> None:
    """Filtering nothing is a mistake to report, not an empty selection to write."""
    sql = f"SELECT count(*) FILTER (WHERE {candidate_traces()}), count(*) FROM traces"
    completed, total = store.query(sql, params={"errors": cfg.errors_from})[1][0]
    if completed:
        return
    have = f"only {total} failed or refused requests" if total else "no traces"
    raise ConfigError(
        f"{cfg.store} has {have} to filter: make traces first with `r1v-data generate` or "
        "`r1v-data import-traces`"
    )


def _benchmarks(cfg: FilterConfig) -> list[Any]:
    if not cfg.decontaminate:
        return []
    from r1v_data.curation.decontam import load_benchmark

    return [
        load_benchmark(spec, ngram=cfg.ngram, min_fraction=cfg.contamination_min_fraction)
        for spec in cfg.decontaminate
    ]


def _error_set(store: Store, cfg: FilterConfig) -> list[str]:
    if cfg.errors_from is None:
        return []
    known = store.query(
        "SELECT count(*) FROM traces WHERE run_id = $errors OR teacher = $errors",
        params={"errors": cfg.errors_from},
    )[1][0][0]
    if not known:
        raise ConfigError(f"--errors-from {cfg.errors_from!r}: no trace has that run id or teacher")
    return [r[0] for r in store.query(_ERROR_SET, params={"errors": cfg.errors_from})[1]]


def _sample_drops(
    store: Store, scores: PartWriter, cfg: FilterConfig, benchmarks: list[Any]
) -> list[SampleDrop]:
    table = sample_drops(
        store,
        scores,
        dedup=cfg.dedup,
        threshold=cfg.near_duplicate_threshold,
        image_distance=cfg.image_distance,
        semantic=cfg.semantic_threshold,
        benchmarks=benchmarks,
    )
    return [SampleDrop(**row) for row in table.to_pylist()]  # the rest of filter.py takes these


def _candidates(store: Store, cfg: FilterConfig, reward: Reward) -> pa.Table:
    con = store.connect()
    try:
        params = {"errors": cfg.errors_from, "scorer": reward.scorer, "version": reward.version}
        return con.sql(_CANDIDATES, params=params).to_arrow_table()
    finally:
        con.close()


def check_where(store: Store, cfg: FilterConfig, reward: Reward) -> None:
    """A malformed --where fails here, before any write: the decision query binds it on no rows,
    then it is evaluated on every candidate (a cast that fails on some value)."""
    if cfg.where:
        sandbox.check_expression(cfg.where, "the candidate traces")
        candidates = _candidates(store, cfg, reward)
        _decide(candidates.slice(0, 0), [], [], cfg)
        sandbox.check_on(candidates, cfg.where, "the candidate traces")


def _decide(candidates: pa.Table, drops: list[SampleDrop], errors: list[str], cfg: FilterConfig) -> pa.Table:
    tables = {
        "candidates": candidates,
        "sample_drops": pa.table(
            {
                "sample_id": [d.sample_id for d in drops],
                "stage": [d.stage for d in drops],
                "reason": [d.reason for d in drops],
            },
            schema=_DROPS,
        ),
        "error_set": pa.table({"sample_id": pa.array(errors, pa.string())}),
    }
    con = sandbox.connect(tables)
    params = {"keep_truncated": cfg.keep_truncated, "max_tokens": cfg.max_completion_tokens or 2**62,
              "tau": cfg.tau, "best_k": cfg.best_k or 2**62, "where_text": cfg.where or "",
              "errors": cfg.errors_from or "", "only_correct": cfg.only_correct}  # fmt: skip
    try:
        return con.sql(_DECIDE.format(where=cfg.where or "true"), params=params).to_arrow_table()
    except duckdb.Error as exc:  # checked on no rows first: here only a failure on the data (a bad cast)
        raise QueryError(
            f"--where {cfg.where!r} is not a valid expression over the candidate traces: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        con.close()


_DROPS = pa.schema([("sample_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


def _write_decisions(
    store: Store, run_id: str, traces: pa.Table, drops: list[SampleDrop], result: FilterResult
) -> None:
    now = utcnow()
    kept = traces.column("kept")
    result.traces, result.kept = traces.num_rows, pc.sum(kept).as_py() or 0
    counts = pc.value_counts(pc.filter(traces.column("stage"), pc.invert(kept))).to_pylist()
    result.dropped = Counter({c["values"]: c["counts"] for c in counts})
    sample_ids = store.ids("samples", "sample_id")
    result.samples = len(sample_ids)
    result.samples_dropped = Counter(d.stage for d in drops)
    dropped = {d.sample_id for d in drops}
    kept_samples = sorted(sample_ids - dropped)
    samples = pa.table({
        "sample_id": [d.sample_id for d in drops] + kept_samples,
        "request_id": pa.nulls(len(drops) + len(kept_samples), pa.string()),
        "stage": [d.stage for d in drops] + ["sample"] * len(kept_samples),
        "kept": [False] * len(drops) + [True] * len(kept_samples),
        "reason": [d.reason for d in drops] + ["kept: no duplicate or contamination found"] * len(kept_samples),
    })  # fmt: skip
    # one part: a run's decisions appear whole or not at all
    table = pa.concat_tables([samples, traces.select(samples.column_names)], promote_options="permissive")
    table = table.append_column("run_id", pa.array([run_id] * table.num_rows, pa.string()))
    table = table.append_column("created_at", pa.array([now] * table.num_rows, pa.timestamp("us", tz="UTC")))
    store.write_part("decisions", table, run_id, 1)
