"""Reward levels RM: trace -> {0..5} into the scores table, cached per (trace, scorer, version).

The reward is named by a spec:

- `rule` (the default): `r1v_data.rewards.rule_score` from the trace's own flags and verdict.
- `rm:MODEL`: a sequence-classification reward model through transformers
  (`r1v_data.grading.reward_model`). Its raw scores are what is cached (`reward_raw`, versioned by the
  model and its options); each filter run maps the raw scores of all its candidates to 0-5 by
  the calibration (`--calibration`; `quantile` is fitted on exactly those candidates) and writes
  those levels with a version naming the calibration and the run.
- `judge:SPEC`: a judge model behind any backend spec, with a 0-5 rubric asking for strict JSON
  (one repair attempt, then a recorded failure; see `r1v_data.grading.judge`).

Only candidates are scored: not failed attempts or refusals, and not the traces of the
`--errors-from` run (the student's answers). Nothing is loaded when everything is cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from r1v_data import text
from r1v_data.backends import Backend, Message, attach_store, make_backend
from r1v_data.config import model_path_identity
from r1v_data.errors import ConfigError
from r1v_data.grading import judge
from r1v_data.grading.rewards import RULE_SCORER, RULE_VERSION, rule_score
from r1v_data.grading.rule_sql import LEFT_TO_PYTHON, needs_parsing, rule_levels
from r1v_data.redact import redact
from r1v_data.store import PartWriter, Store, add_score, utcnow

JUDGE_SCORER, JUDGE_RUBRIC = "judge", "reward-rubric/1"
_JUDGE_PROMPT = """Rate this solution to a problem on an integer scale from 0 to 5:
0 = no final answer, empty or nonsense; 1 = wrong answer and poor reasoning; 2 = wrong answer, sensible reasoning;
3 = right answer with flawed or incomplete reasoning; 4 = right answer, sound reasoning with minor issues;
5 = right answer with clear, complete and correct step-by-step reasoning.
Reply with only this JSON object and nothing else: {{"reward": N}}

Problem:
{question}

Reference answer: {answer}

Solution:
{completion}"""

Progress = Callable[[int], None]
# DuckDB's share of memory for the queries over every candidate (the cached-ids join spills past it)
QUERY_MEMORY = "1GB"
# what the scorers read: the rule scorer's flags, and the texts a model or judge sees
_COLUMNS = ", ".join(f"t.{c}" for c in ("request_id", "sample_id", "error", "text", "think", "answer", "finish_reason",
                                        "think_closed", "truncated", "repetition", "verdict", "completion_tokens",
                                        "sampling"))  # fmt: skip


def candidate_traces(t: str = "") -> str:
    """The SQL condition for traces (aliased `t`, if given) that a filter selects from."""
    p = f"{t}." if t else ""
    return (f"{p}error IS NULL AND {p}finish_reason IS DISTINCT FROM 'refused' "
            f"AND {p}run_id IS DISTINCT FROM $errors AND {p}teacher IS DISTINCT FROM $errors")  # fmt: skip


@dataclass(frozen=True)
class Reward:
    spec: str
    scorer: str
    version: str  # of the cached rows: the levels (rule, judge) or the raw scores (rm)
    calibration: str | None = None  # reward models only

    @property
    def cached_name(self) -> str:
        return "reward_raw" if self.calibration is not None else "reward"


# Runs a model reward (rm:, judge:) over traces, writing their score rows, and says per trace
# whether it scored: the filter stage hands in its executor's (this process or Ray actors).
RunModel = Callable[[Reward, Iterator[dict[str, Any]]], Iterator[bool]]


def parse_reward(spec: str, calibration: str = "quantile", options: dict[str, Any] | None = None) -> Reward:
    """What `--reward SPEC` names, and the version its cached rows carry."""
    if spec == "rule":
        return Reward(spec, RULE_SCORER, RULE_VERSION)
    kind, _, rest = spec.partition(":")
    if kind == "rm" and rest:
        from r1v_data.grading.reward_model import RM_RULES_VERSION, RM_SCORER
        from r1v_data.grading.rewards import Calibration

        try:
            Calibration.parse(calibration)
        except ValueError as exc:
            raise ConfigError(f"--calibration {calibration!r}: {exc}") from None
        # options such as reduction and max_length change the raw scores: they are part of the version
        raw = f"rm-raw/{RM_RULES_VERSION}:{model_path_identity(rest)}:{text.stable_hash(options or {})[:12]}"
        return Reward(spec, RM_SCORER, raw, calibration)
    if kind == "judge" and rest:
        # the version is stored (scores, the filter's manifest): never the key in a judge's URL
        return Reward(spec, JUDGE_SCORER, f"{JUDGE_RUBRIC}+judge:{redact(rest)}")
    raise ConfigError(
        f"--reward {spec!r}: write rule, rm:MODEL (a reward model) or judge:SPEC (a backend spec)"
    )


def score_rewards(
    store: Store,
    writer: PartWriter,
    reward: Reward,
    options: dict[str, Any],
    errors_from: str | None = None,
    judge_max_tokens: int = 1024,
    run_model: RunModel | None = None,
) -> tuple[dict[str, int], str]:
    """Score every candidate trace without a cached row for this version; returns the counts and
    the version of the level rows the selection reads. A model reward runs in `run_model` when
    given, else here."""
    sql = f"""SELECT {_COLUMNS}, s.question, s.answer AS reference FROM traces t JOIN samples s USING (sample_id)
              WHERE {candidate_traces("t")} AND t.request_id NOT IN (
                    SELECT request_id FROM scores WHERE scorer = $scorer AND version = $version AND name = $name
                    AND value IS NOT NULL AND request_id IS NOT NULL)"""
    params = {
        "errors": errors_from,
        "scorer": reward.scorer,
        "version": reward.version,
        "name": reward.cached_name,
    }
    counts = {"scored": 0, "failed": 0}
    counted = f"SELECT count(*), count(*) FILTER (WHERE {LEFT_TO_PYTHON}) FROM ({sql})"
    n, n_python = store.query(counted, params=params, memory_limit=QUERY_MEMORY)[1][0]
    if n:  # load nothing for no work
        if reward.scorer == RULE_SCORER:
            counts["scored"] = _rule_levels_in_duckdb(store, writer, sql, params)
            sql = needs_parsing(sql)  # what DuckDB could not level (flags missing): parsed in Python
        todo = (
            store.stream(sql, None, params, batch=4096)
            if reward.scorer != RULE_SCORER or n_python
            else iter(())
        )
        if reward.scorer != RULE_SCORER and run_model is not None:
            for ok in run_model(reward, todo):
                counts["scored" if ok else "failed"] += 1
        else:
            for trace, value, detail in _scored_here(reward, todo, options, judge_max_tokens, writer):
                counts["scored" if value is not None else "failed"] += 1
                add_score(writer, trace["sample_id"], trace["request_id"], reward.scorer, reward.version,
                          reward.cached_name, value, detail)  # fmt: skip
    if reward.calibration is None:
        return counts, reward.version
    writer.flush()  # the levels are computed from every candidate's raw score, the new ones included
    return counts, _calibrated_levels(store, writer, reward, errors_from)


Scored = Iterator[tuple[dict[str, Any], float | None, str]]


def _rule_levels_in_duckdb(store: Store, writer: PartWriter, todo: str, params: dict[str, Any]) -> int:
    """The rule's levels of every trace of `todo` whose flags are set, computed and written as
    Arrow (no Python row per trace); returns how many."""
    sql = f"""SELECT sample_id, request_id, $scorer AS scorer, $version AS version, $name AS name, value,
                     detail, $run_id AS run_id, $created_at AS created_at FROM ({rule_levels(todo)})"""
    scored = 0
    params = {**params, "run_id": writer.run_id, "created_at": utcnow()}
    for batch in store.batches(sql, None, params, 1 << 20, QUERY_MEMORY):
        writer.add_table(batch)
        scored += batch.num_rows
    return scored


def _scored_here(
    reward: Reward,
    todo: Iterator[dict[str, Any]],
    options: dict[str, Any],
    max_tokens: int,
    writer: PartWriter,
) -> Scored:
    if reward.scorer == RULE_SCORER:
        return ((t, float(r.value), r.detail) for t in todo for r in [rule_score(t)])
    if reward.scorer == JUDGE_SCORER:
        return _judged_here(reward, todo, options, max_tokens, writer)
    return raw_reward_scores(load_reward_model(reward, options), todo)


def judge_spec(reward: Reward) -> str:
    """The backend spec of a `judge:SPEC` reward."""
    return reward.spec.partition(":")[2]


def _judged_here(
    reward: Reward,
    traces: Iterator[dict[str, Any]],
    options: dict[str, Any],
    max_tokens: int,
    writer: PartWriter,
) -> Scored:
    backend = make_backend(judge_spec(reward), **options)
    attach_store(backend, writer.store, writer.run_id)  # a batch judge resumes its recorded batches
    try:
        yield from judged_rewards(backend, traces, max_tokens)
    finally:
        backend.close()


def judged_rewards(backend: Backend, traces: Iterable[dict[str, Any]], max_tokens: int) -> Scored:
    """A judge's 0-5 reward of each trace (None and the reason where it gave none)."""
    held: dict[str, dict[str, Any]] = {}

    def asks() -> Iterator[judge.Ask]:
        for t in traces:
            held[t["request_id"]] = t
            body = _JUDGE_PROMPT.format(question=t["question"], answer=t["reference"], completion=t["text"])
            yield judge.Ask(t["request_id"], [Message("user", body)])

    sampling = replace(judge.JUDGE_SAMPLING, max_tokens=max_tokens)
    for answer in judge.ask_json(backend, asks(), judge.integer_fields(("reward",), 0, 5), sampling):
        value = None if answer.values is None else answer.values["reward"]
        yield held.pop(answer.key), value, answer.detail


def load_reward_model(reward: Reward, options: dict[str, Any]) -> Any:
    from r1v_data.grading.reward_model import RewardModelScorer

    return RewardModelScorer(reward.spec.partition(":")[2], **options).load()


def raw_reward_scores(scorer: Any, traces: Iterable[dict[str, Any]]) -> Scored:
    """A loaded reward model's raw score of each trace, 256 at a time."""
    from r1v_data.grading.reward_model import rm_pair

    def scored(chunk: list[dict[str, Any]]) -> Scored:
        raws = scorer.raw_scores([rm_pair({"question": c["question"]}, c) for c in chunk])
        return ((c, raw, "raw reward-model score") for c, raw in zip(chunk, raws, strict=True))

    chunk: list[dict[str, Any]] = []
    for t in traces:
        chunk.append(t)
        if len(chunk) >= 256:
            yield from scored(chunk)
            chunk = []
    if chunk:
        yield from scored(chunk)


def _calibrated_levels(store: Store, writer: PartWriter, reward: Reward, errors_from: str | None) -> str:
    """Levels 0-5 of every candidate's raw score under the calibration, fitted on these candidates."""
    from r1v_data.grading.rewards import Calibration

    sql = f"""SELECT t.request_id, t.sample_id, arg_max(r.value, r.created_at) AS raw FROM traces t
              JOIN scores r USING (request_id)
              WHERE {candidate_traces("t")}
                AND r.scorer = $scorer AND r.version = $version AND r.name = 'reward_raw' AND r.value IS NOT NULL
              GROUP BY t.request_id, t.sample_id"""  # fmt: skip
    params = {"errors": errors_from, "scorer": reward.scorer, "version": reward.version}
    rows = list(store.stream(sql, None, params, batch=65536))
    calibration = Calibration.parse(reward.calibration or "quantile")
    version = f"{reward.version}|{calibration.spec}|{writer.run_id}"
    levels = calibration.levels([r["raw"] for r in rows])
    for row, level in zip(rows, levels, strict=True):
        value = None if level is None else float(level)
        add_score(writer, row["sample_id"], row["request_id"], reward.scorer, version, "reward", value,
                  f"raw {row['raw']:.6g}")  # fmt: skip
    writer.flush()
    return version
