"""What `generate` writes for each request: the trace row of a result (parsed, verified, with the
sampling it was made with), and the run's counts that every row adds to."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from r1v_data.backends import Backend, GenRequest, GenResult, Sampling
from r1v_data.backends.prompts import PROMPT_VERSION
from r1v_data.executors import Done, Resources, Rows
from r1v_data.stages.generate_grading import DEPTH, TraceGrader
from r1v_data.store import utcnow


@dataclass
class GenerateResult:
    run_id: str
    teacher: str
    requests: int = 0  # requests this run considered (all rounds)
    skipped: int = 0  # already in the store: not sent again
    sent: int = 0
    refused: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    repetition: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    rounds: list[dict[str, int]] = field(default_factory=list)
    adaptive: dict[str, Any] = field(default_factory=dict)  # DRLC's settings, with --adaptive-length
    waiting: dict[str, int] = field(default_factory=dict)  # --no-wait: requests and batches left to collect
    cost: dict[str, Any] = field(default_factory=dict)  # usd (None without a price) and tokens by teacher

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("failed", "verdicts")}
        tokens_per_s = self.completion_tokens / self.seconds if self.seconds else 0.0
        return {
            **out,
            "failed": dict(self.failed),
            "verdicts": dict(self.verdicts),
            "completion_tokens_per_s": round(tokens_per_s, 1),
        }

    def add(self, other: GenerateResult) -> None:
        """Add the counts one result's row made (where the row was made: here or on a worker)."""
        self.failed.update(other.failed)
        self.verdicts.update(other.verdicts)
        self.truncated += other.truncated
        self.repetition += other.repetition
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class Pending:
    sample: dict[str, Any]
    round: int
    index: int
    sampling: Sampling
    rendered: str
    prefix: str  # what the assistant turn started with, when the backend prefilled it
    provenance: str = "generated"
    prompt_version: str = PROMPT_VERSION


def trace_row(
    res: GenResult,
    job: Pending,
    teacher: str,
    run_id: str,
    result: GenerateResult,
    grade: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The trace row of one result; `grade` holds what the grader made of its text (None for a
    failed request, which has no text to grade)."""
    row = base_row(
        res.request_id,
        job.sample,
        teacher,
        job.round,
        job.index,
        job.sampling,
        run_id,
        job.provenance,
        job.prompt_version,
    )
    row.update(
        prompt=job.rendered,
        latency_s=res.latency_s,
        finish_reason=res.finish_reason,
        prompt_tokens=res.prompt_tokens,
        completion_tokens=res.completion_tokens,
    )
    result.prompt_tokens += res.prompt_tokens or 0
    result.completion_tokens += res.completion_tokens or 0
    if grade is None:
        result.failed[reason_key(res.error)] += 1
        row.update(error=res.error or "no text returned", verdict="error")
        return row
    result.verdicts[grade["verdict"]] += 1
    result.truncated += bool(grade["truncated"])
    result.repetition += bool(grade["repetition"])
    row.update(text=res.text, **grade)
    return row


def _gradable(res: GenResult) -> bool:
    return res.error is None and res.text is not None


@dataclass(frozen=True)
class TraceBlock:
    """generate's block function: the teacher answers a block of (request, Pending) pairs and each
    result becomes its graded trace row, where the teacher runs (this process or a Ray actor).
    Grading runs a few results behind the teacher, in the run's grader (`generate_grading.py`).
    A result counts as finished unless it failed in a way a later run may fix."""

    run_id: str
    teacher: str  # the identity rows name
    verify_timeout_s: float

    def __call__(
        self, backend: Backend | None, items: Iterable[tuple[GenRequest, Pending]], resources: Resources
    ) -> Iterator[tuple[Rows, Done]]:
        assert backend is not None, "generate always has a teacher"
        grader = resources.get("grader", lambda: TraceGrader(self.verify_timeout_s))
        jobs: dict[str, Pending] = {}
        grading: dict[str, tuple[GenResult, Pending]] = {}  # submitted to the grader, by request id

        def requests() -> Iterator[GenRequest]:
            for request, job in items:
                jobs[request.request_id] = job
                yield request

        def graded() -> tuple[Rows, Done]:
            key, grade = grader.receive()
            return self._row(*grading.pop(key), grade)

        for res in backend.generate(requests()):
            job = jobs.pop(res.request_id)
            if not _gradable(res):
                yield self._row(res, job)
                continue
            grader.submit(res.request_id, res.text, res.finish_reason, job.prefix, job.sample)
            grading[res.request_id] = (res, job)
            while grading and (len(grading) > DEPTH or grader.has_reply()):
                yield graded()
        while grading:
            yield graded()
        for rid, job in jobs.items():  # a backend that yielded nothing for a request: say so
            yield self._row(GenResult(rid, finish_reason="error", error="no result from the backend"), job)

    def _row(self, res: GenResult, job: Pending, grade: dict[str, Any] | None = None) -> tuple[Rows, Done]:
        tally = GenerateResult(self.run_id, self.teacher)
        row = trace_row(res, job, self.teacher, self.run_id, tally, grade)
        # other failures stay unfinished: the next run retries them
        finished = res.error is None or res.finish_reason == "rejected"
        return [row], Done(res.request_id, finished, tally)


def reason_key(error: str | None) -> str:
    # "HTTP 500: ..." and "timeout after 600 s" count under their first words
    return (error or "no text").split(":", 1)[0][:60]


def base_row(
    rid: str,
    sample: dict[str, Any],
    teacher: str,
    round_: int,
    index: int,
    sampling: Sampling,
    run_id: str,
    provenance: str = "generated",
    prompt_version: str = PROMPT_VERSION,
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "sample_id": sample["sample_id"],
        "teacher": teacher,
        "round": round_,
        "sample_index": index,
        "prompt_version": prompt_version,
        "sampling": sampling.as_dict(),
        "provenance": provenance,
        "run_id": run_id,
        "created_at": utcnow(),
    }
