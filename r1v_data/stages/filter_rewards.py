"""filter's model rewards (`rm:`, `judge:`) through an executor: the reward model or judge runs in
this process or in Ray actors, and each trace's score row is written where it ran. The rule reward
is cheap and stays in the filter's own process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from r1v_data.backends import Backend
from r1v_data.executors import Done, Executor, Resources, Rows, Work
from r1v_data.grading.reward_scoring import (
    JUDGE_SCORER,
    Reward,
    RunModel,
    judge_spec,
    judged_rewards,
    load_reward_model,
    raw_reward_scores,
)
from r1v_data.store import PartWriter, score_row


@dataclass(frozen=True)
class RewardBlock:
    """One model reward's score row for each trace of a block; a trace is finished when scored."""

    reward: Reward
    options: dict[str, Any]
    run_id: str
    judge_max_tokens: int

    def __call__(
        self, backend: Backend | None, traces: Iterable[dict[str, Any]], resources: Resources
    ) -> Iterator[tuple[Rows, Done]]:
        r = self.reward
        if r.scorer == JUDGE_SCORER:
            assert backend is not None, "a judge: reward runs with its judge's backend"
            scored = judged_rewards(backend, traces, self.judge_max_tokens)
        else:  # a reward model: loaded once per process (per actor on Ray)
            model = resources.get("reward_model", lambda: load_reward_model(r, self.options))
            scored = raw_reward_scores(model, traces)
        for trace, value, detail in scored:
            row = score_row(self.run_id, trace["sample_id"], trace["request_id"], r.scorer, r.version,
                            r.cached_name, value, detail)  # fmt: skip
            yield [row], Done(trace["request_id"], value is not None)


def model_runner(
    executor: Executor, writer: PartWriter, options: dict[str, Any], max_tokens: int
) -> RunModel:
    """What `score_rewards` calls to run a model reward on `executor`."""

    def run(reward: Reward, traces: Iterator[dict[str, Any]]) -> Iterator[bool]:
        spec = judge_spec(reward) if reward.scorer == JUDGE_SCORER else None
        block = RewardBlock(reward, options, writer.run_id, max_tokens)
        work = Work(spec, options if spec else {}, block, "scores")
        return (done.finished for done in executor.map(work, traces, writer))

    return run
