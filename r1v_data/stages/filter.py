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
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from r1v_data import __version__, executors, text
from r1v_data.config import FilterConfig
from r1v_data.curation.sample_checks import DROPS, sample_drops
from r1v_data.errors import ConfigError, Interrupted, QueryError, first_line
from r1v_data.executors import make_executor
from r1v_data.grading.reward_scoring import (
    JUDGE_SCORER,
    QUERY_MEMORY,
    Reward,
    candidate_traces,
    judge_spec,
    parse_reward,
    score_rewards,
)
from r1v_data.grading.rewards import RULE_SCORER
from r1v_data.stages.filter_cache import (
    Earlier,
    decisions_key,
    earlier_decisions,
    parts_state,
    rewards_key,
    traces_key,
)
from r1v_data.stages.filter_rewards import model_runner
from r1v_data.store import PartWriter, Store, sandbox, utcnow

Progress = Callable[[str], None]

# Imported traces may carry no token count: their `tokens` are about 4 characters a token. They
# are a branch of their own so that the texts are read only for them (Parquet statistics skip
# every row group whose counts are all there); a --where that names text_chars reads them all.
_TRACE_COLUMNS = """request_id, sample_id, teacher, round, sample_index, run_id, provenance, verdict, finish_reason,
       prompt_tokens, completion_tokens, think_closed, truncated, repetition, created_at,
       length(think) AS think_chars, length(text) AS text_chars"""  # the texts are not carried

_CANDIDATES = f"""
SELECT t.request_id, t.sample_id, t.teacher, t.round, t.sample_index, t.run_id AS trace_run_id,
       t.provenance, t.verdict, t.finish_reason, t.prompt_tokens, t.completion_tokens, t.think_closed,
       t.truncated, t.repetition, t.think_chars, t.text_chars, t.tokens,
       r.value AS reward, s.source, s.subject, s.difficulty, s.answer_type, len(s.images) AS n_images
FROM (SELECT * FROM (SELECT {_TRACE_COLUMNS}, completion_tokens AS tokens
                     FROM traces WHERE {candidate_traces()} AND completion_tokens IS NOT NULL
                     UNION ALL
                     SELECT {_TRACE_COLUMNS}, length(text) // 4 AS tokens
                     FROM traces WHERE {candidate_traces()} AND completion_tokens IS NULL)
      {{latest}}) t
JOIN samples s USING (sample_id)
LEFT JOIN ({{rewards}}) r USING (request_id)"""

# a trace's reward is the latest of its level rows; when each trace has one row (`_rewards_memo`),
# the row itself: grouping every row by its string id cost a fifth of the decision query's CPU
_LATEST_REWARDS = """SELECT request_id, arg_max(value, created_at) AS value FROM scores
WHERE scorer = $scorer AND version = $version AND name = 'reward' GROUP BY request_id"""
_ONE_REWARD = """SELECT request_id, value FROM scores WHERE scorer = $scorer AND version = $version AND name = 'reward'"""
_ANY_REWARD = (
    """SELECT 1 FROM scores WHERE scorer = $scorer AND version = $version AND name = 'reward' LIMIT 1"""
)
_ONE_ROW_A_SAMPLE = "SELECT count(*) = count(DISTINCT sample_id) FROM samples"
_REWARD_ROWS = """SELECT count(*) = count(DISTINCT request_id) AND count(created_at) = count(*) FROM scores
WHERE scorer = $scorer AND version = $version AND name = 'reward'"""

# a request answered twice (none should be) counts once, by its latest trace; the window costs
# more than the rest of the candidates query, so it runs only where the ids are not unique
_LATEST = "QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY created_at DESC) = 1"

_ERROR_SET = """
SELECT sample_id FROM traces WHERE error IS NULL AND finish_reason IS DISTINCT FROM 'refused'
                             AND (run_id = $errors OR teacher = $errors)
GROUP BY sample_id HAVING arg_max(verdict, (created_at, round, sample_index)) IS DISTINCT FROM 'correct'"""

_DECIDE = """
WITH candidates AS ({candidates}), error_set AS ({error_set}), c AS (
    SELECT c.*, d.stage AS sample_stage, d.reason AS sample_reason, e.sample_id IS NOT NULL AS in_errors,
           COALESCE(({where}), false) AS where_ok
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
    SELECT *, {rank} AS rank FROM ruled
), samples_ruled AS (
    SELECT sample_id, NULL::VARCHAR AS request_id, coalesce(d.stage, 'sample') AS stage, d.stage IS NULL AS kept,
           coalesce(d.reason, 'kept: no duplicate or contamination found') AS reason
    FROM (SELECT DISTINCT sample_id FROM samples) LEFT JOIN sample_drops d USING (sample_id)
), traces_ruled AS (
SELECT sample_id, request_id,
       CASE WHEN rule IS NULL AND rank > $best_k THEN 'best-k' ELSE coalesce(rule, 'selected') END AS stage,
       rule IS NULL AND rank <= $best_k AS kept,
       CASE
         WHEN rule IN ('dedup', 'decontamination') THEN sample_reason
         WHEN rule = 'where' THEN 'where: not (' || $where_text || ')'
         WHEN rule = 'truncation' THEN 'truncated: cut off at the token limit'
         WHEN rule = 'length' THEN 'too long: ' || CASE WHEN completion_tokens IS NULL THEN '~' ELSE '' END
                                   || tokens || ' completion tokens > ' || $max_tokens
         WHEN rule = 'verdict' THEN 'not verified correct (' || coalesce(verdict, 'no verdict') || '): with no '
                                    || '--min-score/--iteration only correct traces are kept (--keep-wrong keeps the others)'
         WHEN rule = 'reward' AND reward IS NULL THEN 'reward missing: the scorer failed on this trace'
         WHEN rule = 'reward' THEN 'reward below threshold: ' || reward::INT || ' < tau ' || $tau
         WHEN rank > $best_k THEN 'best-k: rank ' || rank || ' of its sample > k = ' || $best_k
         WHEN in_errors AND reward < $tau
              THEN 'error set E_(t-1): a correct trace of a sample wrong in ' || $errors || ' (reward ' || reward::INT || ')'
         ELSE 'reward ' || reward::INT || ' >= tau ' || $tau
       END AS reason  -- || not format(): three times faster, and this runs once per candidate
FROM ranked
)
{tail}"""

# best-k's rank of a trace among its sample's; a window over every candidate, so only with --best-k
_RANK = """row_number() OVER (
        PARTITION BY sample_id ORDER BY rule IS NULL DESC, reward DESC NULLS LAST, verdict = 'correct' DESC,
                 completion_tokens ASC NULLS LAST, request_id)"""
# what the decisions part holds: every sample's and every candidate trace's row
_ALL_DECISIONS = """SELECT *, $run_id AS run_id, $now::TIMESTAMPTZ AS created_at
FROM (SELECT * FROM samples_ruled UNION ALL SELECT * FROM traces_ruled)"""
_WHERE_CHECK = "SELECT count(*) FILTER (WHERE where_ok) FROM c"


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
    sample_checks_from: str | None = None  # the filter run whose sample drops were reused
    rewards_from: str | None = None  # the filter run after which every candidate had its reward
    decisions_from: str | None = None  # the filter run whose decisions this one copied
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


def run_filter(cfg: FilterConfig, progress: Progress | None = None) -> FilterResult:
    reward = parse_reward(cfg.reward, cfg.calibration, cfg.reward_options)
    executors.require(cfg.executor, judge_spec(reward) if reward.scorer == JUDGE_SCORER else None)
    say = progress or (lambda _: None)
    with Store.open(cfg.store, write=True) as store:
        earlier = Earlier.load(store)
        traces = _require_traces(store, cfg, earlier)
        unique = traces["unique"]
        check_where(store, cfg, reward, unique)  # a malformed --where is refused before anything is written
        benchmarks = _benchmark_identities(cfg)
        errors = _error_set(store, cfg)
        run_id = store.begin_run("filter")
        result = FilterResult(run_id, cfg.tau, reward.version, _selection(cfg), error_set=errors)
        start, status, checks, described = time.perf_counter(), "failed", None, []
        memo: dict[str, Any] = {"traces": traces}
        try:
            with (
                store.writer("scores", run_id, flush_rows=65536) as scores,
                closing(make_executor(cfg.executor)) as executor,
            ):
                say("scoring rewards")
                run_model = model_runner(executor, scores, cfg.reward_options, cfg.judge_max_tokens)
                levels, fresh = _rewards(store, scores, cfg, reward, earlier, run_model, result)
                reward = replace(reward, version=levels)
                say("checking samples")
                checks, drops, described = _sample_rule_drops(store, scores, cfg, benchmarks, earlier, result)
            if reward.calibration is None and not result.rewards.get("failed"):  # every candidate scored
                one_each = fresh and unique and result.rewards["scored"] == traces["candidates"]
                memo.update(_rewards_memo(store, cfg, reward, earlier, one_each))
            say("selecting traces")
            if "rewards" in memo:  # every candidate has its reward: the decisions can be keyed
                memo["decisions"] = decisions_key(
                    cfg.model_dump(mode="json"), reward.version, memo["rewards"], checks
                )
            hit = earlier.find(("memo", "decisions"), memo.get("decisions"))
            if hit is None or not _copy_decisions(store, run_id, hit, drops, result):
                unique_rows = (unique, memo.get("one_reward", False))
                _write_decisions(store, run_id, cfg, reward, drops, unique_rows, result)
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"  # decisions are written in one step: none of this run's are kept
            raise Interrupted(f"filter run {run_id} kept its cached rewards; no decisions") from exc
        finally:
            result.seconds = time.perf_counter() - start
            manifest = {"command": "filter", "r1v_version": __version__, "run_id": run_id,
                        "config": cfg.model_dump(mode="json"), "reward": reward.version,
                        "benchmarks": described, "sample_checks": checks, "memo": memo,
                        "counts": result.as_dict()}  # fmt: skip
            store.finish_run(run_id, status, result.as_dict(), manifest)
    return result


def _rewards(
    store: Store,
    scores: PartWriter,
    cfg: FilterConfig,
    reward: Reward,
    earlier: Earlier,
    run_model: Any,
    result: FilterResult,
) -> tuple[str, bool]:
    """Scores the candidates without a cached reward; returns the version of the level rows the
    selection reads, and whether the store held none of them before (then this run wrote one
    row per candidate). Skipped when an earlier run left every one of these candidates scored."""
    if reward.calibration is None:
        hit = earlier.find(
            ("memo", "rewards"), rewards_key(store, reward.scorer, reward.version, cfg.errors_from)
        )
        if hit is not None:
            result.rewards, result.rewards_from = {"scored": 0, "failed": 0}, hit[0]
            return reward.version, False
    params = {"scorer": reward.scorer, "version": reward.version}
    # the rule writes one row per trace it scores; a model on an executor might retry a block
    fresh = reward.scorer == RULE_SCORER and not store.query(_ANY_REWARD, params=params)[1]
    result.rewards, levels = score_rewards(
        store, scores, reward, cfg.reward_options, cfg.errors_from, cfg.judge_max_tokens, run_model
    )
    return levels, fresh


def _selection(cfg: FilterConfig) -> str:
    if cfg.only_correct:
        return "verified-correct traces only (no --min-score/--iteration; --keep-wrong keeps the others)"
    if cfg.keep_wrong:
        return "every trace, wrong ones included (--keep-wrong)"
    return f"reward level >= tau {cfg.tau}"


def _rewards_memo(
    store: Store, cfg: FilterConfig, reward: Reward, earlier: Earlier, one_each: bool = False
) -> dict[str, Any]:
    """The rewards' memo (`filter_cache`) once every candidate has its reward: the key, and
    whether each trace has one level row (then the decision query need not pick the latest).
    `one_each`: this run wrote the only level rows, as many as there are candidates, each of a
    distinct id: with one sample row per sample id, that is one row per candidate, known without
    counting the distinct ids of every row."""
    key = rewards_key(store, reward.scorer, reward.version, cfg.errors_from)
    if one_each and store.query(_ONE_ROW_A_SAMPLE)[1][0][0]:  # then one row a candidate, none twice
        return {"rewards": key, "one_reward": True}
    if (hit := earlier.find(("memo", "rewards"), key)) is not None and "one_reward" in hit[1]["memo"]:
        return {"rewards": key, "one_reward": hit[1]["memo"]["one_reward"]}
    params = {"scorer": reward.scorer, "version": reward.version}
    one = store.query(_REWARD_ROWS, params=params, memory_limit=QUERY_MEMORY)[1][0][0]
    return {"rewards": key, "one_reward": bool(one)}


def _require_traces(store: Store, cfg: FilterConfig, earlier: Earlier) -> dict[str, Any]:
    """Filtering nothing is a mistake to report, not an empty selection to write. Returns the
    memo of what it found (`filter_cache`): `unique`, whether every candidate trace has its own
    request id (a hash collision only costs a window), and `candidates`, how many there are."""
    key = traces_key(store, cfg.errors_from)
    if (hit := earlier.find(("memo", "traces", "key"), key)) is not None:
        found = hit[1]["memo"]["traces"]
        return {"key": key, "unique": bool(found["unique"]), "candidates": found.get("candidates")}
    candidate = candidate_traces()
    sql = (f"SELECT count(*) FILTER (WHERE {candidate}), count(*), "
           f"count(DISTINCT hash(request_id)) FILTER (WHERE {candidate}) FROM traces")  # fmt: skip
    completed, total, distinct = store.query(
        sql, params={"errors": cfg.errors_from}, memory_limit=QUERY_MEMORY
    )[1][0]
    if completed:
        return {"key": key, "unique": completed == distinct, "candidates": completed}
    have = f"only {total} failed or refused requests" if total else "no traces"
    raise ConfigError(
        f"{cfg.store} has {have} to filter: make traces first with `r1v-data generate` or "
        "`r1v-data import-traces`"
    )


def _benchmark_identities(cfg: FilterConfig) -> list[dict[str, Any]]:
    """What each benchmark's index would be made from (`decontam.benchmark_identity`): cheap, so
    a benchmark is read and indexed only when the sample checks run."""
    if not cfg.decontaminate:
        return []
    from r1v_data.curation.decontam import benchmark_identity

    return [
        benchmark_identity(spec, ngram=cfg.ngram, min_fraction=cfg.contamination_min_fraction)
        for spec in cfg.decontaminate
    ]


def _load_benchmarks(cfg: FilterConfig) -> list[Any]:
    from r1v_data.curation.decontam import load_benchmark

    return [
        load_benchmark(spec, ngram=cfg.ngram, min_fraction=cfg.contamination_min_fraction)
        for spec in cfg.decontaminate
    ]


def _error_set(store: Store, cfg: FilterConfig) -> int:
    """How many samples are in E_(t-1); the decision query finds which."""
    if cfg.errors_from is None:
        return 0
    known = store.query(
        "SELECT count(*) FROM traces WHERE run_id = $errors OR teacher = $errors",
        params={"errors": cfg.errors_from},
    )[1][0][0]
    if not known:
        raise ConfigError(f"--errors-from {cfg.errors_from!r}: no trace has that run id or teacher")
    return store.query(f"SELECT count(*) FROM ({_ERROR_SET})", params={"errors": cfg.errors_from})[1][0][0]


def _sample_rule_drops(
    store: Store,
    scores: PartWriter,
    cfg: FilterConfig,
    identities: list[dict[str, Any]],
    earlier: Earlier,
    result: FilterResult,
) -> tuple[str | None, pa.Table, list[dict[str, Any]]]:
    """The sample checks' key, drops and benchmarks (described): a previous run's when it checked
    the same, else new ones (the benchmarks are loaded then)."""
    key = _sample_checks_key(store, cfg, identities)
    if key is None:  # no sample rule runs
        return None, DROPS.empty_table(), []
    if (hit := earlier.find(("sample_checks",), key)) is not None:
        result.sample_checks_from = hit[0]
        return key, _cached_sample_drops(store, hit[0]), hit[1].get("benchmarks", [])
    benchmarks = _load_benchmarks(cfg)
    return key, _sample_drops(store, scores, cfg, benchmarks), [b.describe() for b in benchmarks]


def _sample_checks_key(store: Store, cfg: FilterConfig, identities: list[dict[str, Any]]) -> str | None:
    """What the sample rules' drops depend on: the samples (their parts), the rules' settings and
    code, and the benchmarks. None when no sample rule runs."""
    if not cfg.dedup and not identities:
        return None
    settings = {"dedup": cfg.dedup, "threshold": cfg.near_duplicate_threshold, "image_distance": cfg.image_distance,
                "semantic": cfg.semantic_threshold, "r1v": __version__}  # fmt: skip
    return text.stable_hash("sample-checks/2", settings, parts_state(store, "samples"), identities)


_CACHED_DROPS = """
SELECT sample_id, stage, reason FROM decisions
WHERE run_id = $run AND request_id IS NULL AND NOT kept AND stage IN ('dedup', 'decontamination')"""


def _cached_sample_drops(store: Store, run_id: str) -> pa.Table:
    """The sample drops of an earlier filter run that checked the same samples the same way (the
    checks cost a pass over every sample; re-filtering at another tau should not repeat them)."""
    con = store.connect()
    try:
        return con.sql(_CACHED_DROPS, params={"run": run_id}).to_arrow_table().cast(DROPS)
    finally:
        con.close()


def _sample_drops(store: Store, scores: PartWriter, cfg: FilterConfig, benchmarks: list[Any]) -> pa.Table:
    """(sample_id, stage, reason) of every sample a sample rule drops."""
    return sample_drops(
        store,
        scores,
        dedup=cfg.dedup,
        threshold=cfg.near_duplicate_threshold,
        image_distance=cfg.image_distance,
        semantic=cfg.semantic_threshold,
        benchmarks=benchmarks,
    )


def _decisions_sql(cfg: FilterConfig, tail: str, unique: bool, one_reward: bool = False) -> str:
    error_set = _ERROR_SET if cfg.errors_from else "SELECT NULL::VARCHAR AS sample_id WHERE false"
    candidates = _CANDIDATES.format(
        latest="" if unique else _LATEST, rewards=_ONE_REWARD if one_reward else _LATEST_REWARDS
    )
    return _DECIDE.format(candidates=candidates, error_set=error_set, where=cfg.where or "true",
                          rank=_RANK if cfg.best_k else "1", tail=tail)  # fmt: skip


def _params(cfg: FilterConfig, reward: Reward) -> dict[str, Any]:
    return {"keep_truncated": cfg.keep_truncated, "max_tokens": cfg.max_completion_tokens or 2**62,
            "tau": cfg.tau, "best_k": cfg.best_k or 2**62, "where_text": cfg.where or "",
            "errors": cfg.errors_from, "scorer": reward.scorer, "version": reward.version,
            "only_correct": cfg.only_correct}  # fmt: skip


def check_where(store: Store, cfg: FilterConfig, reward: Reward, unique: bool) -> None:
    """A malformed --where fails here, before any write: the expression is refused if it could
    leave its place, then evaluated on every candidate (a cast that fails on some value)."""
    if not cfg.where:
        return
    sandbox.check_expression(cfg.where, "the candidate traces")
    with store.sandboxed({"sample_drops": DROPS.empty_table()}, QUERY_MEMORY, ordered=False) as con:
        try:
            con.sql(_decisions_sql(cfg, _WHERE_CHECK, unique), params=_params(cfg, reward)).fetchall()
        except duckdb.Error as exc:
            raise QueryError(
                f"--where {cfg.where!r} is not a valid expression over the candidate traces: {first_line(exc)}"
            ) from None


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """`sql`'s rows as Arrow batches. The --where has passed `check_where`: a failure here is
    DuckDB's own (out of memory or temporary disk space, which pyarrow's reader raises as OSError)."""
    try:
        yield from con.sql(sql, params=params).to_arrow_reader(1 << 16)
    except (duckdb.Error, OSError) as exc:
        raise QueryError(f"the filter's decision query failed: {first_line(exc)}") from None


def _write_decisions(
    store: Store,
    run_id: str,
    cfg: FilterConfig,
    reward: Reward,
    drops: pa.Table,
    unique: tuple[bool, bool],
    result: FilterResult,
) -> None:
    """Every sample's and candidate trace's decision, streamed from DuckDB into one part: a run's
    decisions appear whole or not at all. `unique`: whether the request ids and the reward rows
    are unique (`_decisions_sql` leaves out what picks the latest of several)."""
    params = {**_params(cfg, reward), "run_id": run_id, "now": utcnow()}
    with store.sandboxed({"sample_drops": drops}, QUERY_MEMORY, ordered=False) as con:
        batches = _rows(con, _decisions_sql(cfg, _ALL_DECISIONS, *unique), params)
        _write_decision_part(store, run_id, batches, drops, result)


def _copy_decisions(
    store: Store, run_id: str, hit: tuple[str, dict[str, Any]], drops: pa.Table, result: FilterResult
) -> bool:
    """An earlier run's decision rows as this run's, when its `decisions_key` is this run's (so
    its rows are what `_write_decisions` would write) and its part is there whole."""
    counts = hit[1].get("counts", {})
    rows = counts.get("samples", -1) + counts.get("traces", 0)
    if (batches := earlier_decisions(store, hit[0], rows, run_id)) is None:
        return False
    result.decisions_from = hit[0]
    _write_decision_part(store, run_id, batches, drops, result)
    return True


def _write_decision_part(
    store: Store, run_id: str, batches: Iterator[pa.RecordBatch], drops: pa.Table, result: FilterResult
) -> None:
    """A run's decisions as its one part (whole or not at all), counted into `result`."""
    result.samples_dropped = Counter(drops.column("stage").to_pylist())
    store.write_part_stream("decisions", (_counted(b, result) for b in batches), run_id, 1)


def _counted(batch: pa.RecordBatch, result: FilterResult) -> pa.RecordBatch:
    """Adds `batch`'s samples, traces, kept traces and drops per rule to `result`."""
    is_trace = pc.is_valid(batch.column("request_id"))
    result.samples += batch.num_rows - (pc.sum(is_trace).as_py() or 0)
    traces = batch.filter(is_trace)
    kept = traces.column("kept")
    result.traces += traces.num_rows
    result.kept += pc.sum(kept).as_py() or 0
    for c in pc.value_counts(pc.filter(traces.column("stage"), pc.invert(kept))).to_pylist():
        result.dropped[c["values"]] += c["counts"]
    return batch
