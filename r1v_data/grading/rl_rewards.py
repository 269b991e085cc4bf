"""Rewards for RL on r1v's `rl` rows: answer accuracy through r1v's own verifier, and the
`<think>` format. The same functions serve TRL's GRPOTrainer (`r1v-train grpo`) and the verl and
EasyR1 exports, so a policy is rewarded by exactly the rules that curated its data.

Every reward is stamped: `REWARD_VERSION` names these rules and the verifier's version, and
trainers log it next to their metrics.
"""

from __future__ import annotations

import atexit
from collections.abc import Sequence
from typing import Any

from r1v_data.backends.prompts import parts_text
from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify import VERIFIER_NAME, VerifyRequest

FORMAT_RULES_VERSION = 1
REWARD_VERSION = f"r1v-rl-reward/{FORMAT_RULES_VERSION}+{VERIFIER_NAME}"

_pool: Any = None


def _verifier() -> Any:
    """One verifier pool per process, started on first use: math-verify runs in its workers with
    a hard timeout, so a pathological completion cannot stall a training step."""
    global _pool
    if _pool is None:
        from r1v_data.grading.verify_pool import VerifierPool

        _pool = VerifierPool(workers=2, timeout_s=5.0)
        atexit.register(_pool.close)
    return _pool


def as_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """A completion as text: TRL hands conversational completions over as message lists."""
    if isinstance(completion, str):
        return completion
    return "".join(
        m["content"] if isinstance(m["content"], str) else parts_text(m["content"]) for m in completion
    )


def accuracy_rewards(
    completions: Sequence[str | Sequence[dict[str, Any]]],
    solutions: Sequence[str | None],
    answer_types: Sequence[str | None] | None = None,
    options: Sequence[Sequence[str] | None] | None = None,
) -> list[float]:
    """1.0 where the completion's final answer verifies against the reference, else 0.0.
    Multiple-choice rows need their `options`: an answer may name the option's text."""
    n = len(solutions)
    types, opts = answer_types or [None] * n, options or [None] * n
    answers = [
        parse_completion(as_text(c), options=o, answer_type=t).answer
        for c, t, o in zip(completions, types, opts, strict=True)
    ]
    requests = [VerifyRequest(*r) for r in zip(answers, solutions, types, opts, strict=True)]
    return [1.0 if v.correct else 0.0 for v in _verifier().verify_many(requests)]


def format_reward(completion: str | Sequence[dict[str, Any]], assistant_prefix: str = "") -> float:
    """1.0 for a closed `<think>` block followed by a final answer, else 0.0."""
    parsed = parse_completion(as_text(completion), assistant_prefix=assistant_prefix)
    ok = parsed.think_closed and parsed.answer is not None and not parsed.truncated
    return 1.0 if ok else 0.0


def verl_compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> float:
    """verl's custom reward signature: accuracy, with the answer type and options from `extra_info`."""
    info = extra_info or {}
    return accuracy_rewards([solution_str], [ground_truth], [info.get("answer_type")], [info.get("options")])[
        0
    ]


def easyr1_compute_score(
    reward_inputs: list[dict[str, Any]], format_weight: float = 0.1
) -> list[dict[str, float]]:
    """EasyR1's batch reward signature: overall = (1 - w)·accuracy + w·format, per response."""
    responses = [r["response"] for r in reward_inputs]
    accuracy = accuracy_rewards(
        responses,
        [r["ground_truth"] for r in reward_inputs],
        [r.get("answer_type") for r in reward_inputs],
        [r.get("options") for r in reward_inputs],
    )
    scores = []
    for response, acc in zip(responses, accuracy, strict=True):
        fmt = format_reward(response)
        scores.append(
            {"overall": (1 - format_weight) * acc + format_weight * fmt, "accuracy": acc, "format": fmt}
        )
    return scores
