"""Reward levels RM: trace -> {0..5} into the scores table, cached per (trace, scorer, version).

The reward is named by a spec:

- `rule` (the default): `r1v_data.rewards.rule_score` from the trace's own flags and verdict.
- `rm:MODEL`: a sequence-classification reward model through transformers
  (`r1v_data.reward_model`), its raw score mapped to 0-5 by a calibration (`--calibration`);
  the raw score is kept in the row's detail. A `quantile` calibration is fitted on the traces
  scored in the same run (the whole candidate set on a first run).
- `judge:SPEC`: a judge model behind any backend spec, with a 0-5 rubric asking for strict JSON
  (one repair attempt, then a recorded failure; see `r1v_data.judge`).

Only completions are scored: failed attempts and refusals are not traces to select.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from r1v_data import judge
from r1v_data.backends import Message, make_backend
from r1v_data.errors import ConfigError
from r1v_data.rewards import RULE_SCORER, RULE_VERSION, rule_score
from r1v_data.store import PartWriter, Store, utcnow

COMPLETIONS = "error IS NULL AND finish_reason IS DISTINCT FROM 'refused'"
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
# what the scorers read: the rule scorer's flags, and the texts a model or judge sees
_COLUMNS = ", ".join(f"t.{c}" for c in ("request_id", "sample_id", "error", "text", "think", "answer", "finish_reason",
                                        "think_closed", "truncated", "repetition", "verdict", "completion_tokens",
                                        "sampling"))  # fmt: skip


@dataclass(frozen=True)
class Reward:
    spec: str
    scorer: str
    version: str
    calibration: str | None = None  # reward models only


def parse_reward(spec: str, calibration: str = "quantile") -> Reward:
    """What `--reward SPEC` names, and the version its cached rows carry."""
    if spec == "rule":
        return Reward(spec, RULE_SCORER, RULE_VERSION)
    kind, _, rest = spec.partition(":")
    if kind == "rm" and rest:
        from r1v_data.reward_model import RM_SCORER, rm_version

        try:
            return Reward(spec, RM_SCORER, rm_version(rest, calibration), calibration)
        except ValueError as exc:
            raise ConfigError(f"--calibration {calibration!r}: {exc}") from None
    if kind == "judge" and rest:
        return Reward(spec, JUDGE_SCORER, f"{JUDGE_RUBRIC}+judge:{rest}")
    raise ConfigError(
        f"--reward {spec!r}: write rule, rm:MODEL (a reward model) or judge:SPEC (a backend spec)"
    )


def score_rewards(
    store: Store,
    writer: PartWriter,
    reward: Reward,
    options: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, int]:
    """Score every completion without a reward row for this version; returns counts."""
    sql = f"""SELECT {_COLUMNS}, s.question, s.answer AS reference FROM traces t JOIN samples s USING (sample_id)
              WHERE {COMPLETIONS.replace("error", "t.error").replace("finish_reason", "t.finish_reason")}
                AND t.request_id NOT IN (SELECT request_id FROM scores WHERE scorer = ? AND version = ?
                                         AND name = 'reward' AND value IS NOT NULL AND request_id IS NOT NULL)"""
    todo = store.stream(sql, None, [reward.scorer, reward.version], batch=4096)
    if reward.scorer == RULE_SCORER:
        rows = ((t, float(r.value), r.detail) for t in todo for r in [rule_score(t)])
    elif reward.scorer == JUDGE_SCORER:
        rows = _judged(reward, todo, options)
    else:
        rows = _reward_model(reward, todo, options)
    counts = {"scored": 0, "failed": 0}
    for n, (trace, value, detail) in enumerate(rows, 1):
        counts["scored" if value is not None else "failed"] += 1
        writer.add(_row(trace, reward, value, detail, writer.run_id))
        if progress and n % 1024 == 0:
            progress(n)
    return counts


def _row(
    trace: dict[str, Any], reward: Reward, value: float | None, detail: str, run_id: str
) -> dict[str, Any]:
    return {
        "sample_id": trace["sample_id"],
        "request_id": trace["request_id"],
        "scorer": reward.scorer,
        "version": reward.version,
        "name": "reward",
        "value": value,
        "detail": detail,
        "run_id": run_id,
        "created_at": utcnow(),
    }


Scored = Iterator[tuple[dict[str, Any], float | None, str]]


def _judged(reward: Reward, traces: Iterator[dict[str, Any]], options: dict[str, Any]) -> Scored:
    backend = make_backend(reward.spec.partition(":")[2], **options)
    held: dict[str, dict[str, Any]] = {}

    def asks() -> Iterator[judge.Ask]:
        for t in traces:
            held[t["request_id"]] = t
            body = _JUDGE_PROMPT.format(question=t["question"], answer=t["reference"], completion=t["text"])
            yield judge.Ask(t["request_id"], [Message("user", body)])

    try:
        sampling = replace(judge.JUDGE_SAMPLING, max_tokens=64)
        for answer in judge.ask_json(backend, asks(), judge.integer_fields(("reward",), 0, 5), sampling):
            value = None if answer.values is None else answer.values["reward"]
            yield held.pop(answer.key), value, answer.detail
    finally:
        backend.close()


def _reward_model(reward: Reward, traces: Iterator[dict[str, Any]], options: dict[str, Any]) -> Scored:
    from r1v_data.reward_model import RewardModelScorer, rm_pair

    scorer = RewardModelScorer(
        reward.spec.partition(":")[2], calibration=reward.calibration, **options
    ).load()
    ids: list[dict[str, Any]] = []  # only the ids are held: raw scores are calibrated at the end
    raws: list[float] = []
    chunk: list[tuple[str, str]] = []
    for t in traces:
        ids.append({"request_id": t["request_id"], "sample_id": t["sample_id"]})
        chunk.append(rm_pair({"question": t["question"]}, t))
        if len(chunk) >= 256:
            raws.extend(scorer.raw_scores(chunk))
            chunk = []
    raws.extend(scorer.raw_scores(chunk) if chunk else [])
    for t, raw, level in zip(ids, raws, scorer.calibration.levels(raws), strict=True):
        yield t, None if level is None else float(level), f"raw {raw:.6g}"
