"""`run_generate`: distil traces from a teacher, resumably, over several self-distillation rounds.

Every request has an id that hashes what determines its output (sample, teacher, rendered
prompt, sampling parameters, sample index, round). Before sending, ids already in the store are
skipped, so a re-run, or a run killed with SIGKILL and restarted, never repeats a finished
request and never writes a trace twice. Round r+1 regenerates only the samples that have no
correct trace from this teacher yet.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

from r1v_data import __version__, executors, text
from r1v_data.alcotd import drlc
from r1v_data.alcotd.drlc import Control
from r1v_data.backends import Backend, BatchesPending, GenRequest, Sampling, attach_store, make_backend
from r1v_data.backends.pricing import Meter, RoundBill, load_prices
from r1v_data.backends.prompts import (
    PROMPT_VERSION,
    REVISE_VERSION,
    Prompt,
    build_prompt,
    build_revision_prompt,
)
from r1v_data.config import GenerateConfig
from r1v_data.errors import ConfigError, Interrupted
from r1v_data.executors import Executor, Work, make_executor
from r1v_data.grading.verify import VERIFIER_NAME
from r1v_data.stages.generate_grading import InlineGrader, TraceGrader
from r1v_data.stages.generate_rows import GenerateResult, Pending, TraceBlock, base_row
from r1v_data.store import PartWriter, Store

# (requests finished, requests to send or None, completion tokens so far); a batch backend also
# passes note= (what its batches are doing while nothing finishes)
Progress = Callable[..., None]

COMPACT_AFTER_PARTS = 32  # small trace parts of one run that make the end of generate compact them
_SAMPLE_COLUMNS = "sample_id, question, options, answer, answer_type, images, caption"


@dataclass
class _Round:
    """One pass over a set of problems: which, with which prompt, how many samples each."""

    number: int
    label: str | int  # what request ids hash for the round ("revise" for the revision stage)
    sampling: Sampling  # sampling.n samples per problem
    ids: list[str]
    samples: Iterable[dict[str, Any]]
    prompt: Callable[[dict[str, Any]], Prompt]
    provenance: Callable[[dict[str, Any]], str]
    prompt_version: str = PROMPT_VERSION
    controls: dict[str, Control] | None = None  # DRLC's per-sample settings (teacher rounds only)


@dataclass
class _Run:
    """What every step of one generate run shares."""

    store: Store
    cfg: GenerateConfig
    done: set[str]  # finished request ids: read once from the store, added to as results arrive
    writer: PartWriter
    grader: TraceGrader | InlineGrader  # parses and verifies results (see `_grader`)
    result: GenerateResult
    progress: Progress | None
    executor: Executor
    controls: dict[str, Control] | None = None
    meter: Meter | None = None


def run_generate(
    cfg: GenerateConfig, progress: Progress | None = None, backend: Backend | None = None
) -> GenerateResult:
    """Generate traces for the samples of `cfg.store`; `backend` overrides `cfg.teacher`
    (a caller that already holds a loaded model)."""
    executors.require(cfg.executor, cfg.teacher, cfg.reviser)
    with Store.open(cfg.store, write=True) as store:
        problems = store.sample_ids(cfg.where, cfg.limit)  # also refuses a malformed --where before any work
        controls = _adaptive_controls(store, cfg, problems)
        meter = Meter(load_prices(cfg.prices))  # a bad price file stops the run before it begins
        owned = backend is None  # close only what this call built
        backend = backend or make_backend(cfg.teacher, **cfg.teacher_options)
        if start_client := getattr(backend, "start_client", None):  # it imports meanwhile
            start_client()
        run_id = store.begin_run("generate")
        attach_store(backend, store, run_id)
        result = GenerateResult(run_id, backend.identity, adaptive=_describe_controls(controls, cfg))
        start = time.perf_counter()
        status = "failed"
        try:
            with (
                _grader(backend, cfg) as grader,
                # journaled: a result is on disk once it counts as done, so a kill re-sends only
                # the requests in flight (the buffer is folded into its part on the next open)
                store.writer(
                    "traces", run_id, journal=True, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds
                ) as writer,
                closing(make_executor(cfg.executor)) as executor,
            ):
                done, proven = _finished_request_ids(store, cfg.retry_failed, backend.identity)
                _trust_proven_settings(backend, proven)
                run = _Run(store, cfg, done, writer, grader, result, progress, executor, controls, meter)
                for round_ in range(1, cfg.rounds + 1):
                    # later rounds retry only this run's problems that no trace has solved yet
                    ids = problems if round_ == 1 else _unsolved(store, problems, result.teacher, round_)
                    if not ids:
                        break
                    result.rounds.append(_run_round(run, backend, round_, ids, cfg.teacher_options))
                    writer.flush()  # the next round reads this one's verdicts from the store
                if cfg.reviser:
                    result.rounds.append(_revise(run, backend, problems))
            # a run with many small parts (a slow teacher flushes by time) leaves one part instead
            store.compact(("traces",), min_parts=COMPACT_AFTER_PARTS)
            status = "ok"
        except BatchesPending as exc:  # --no-wait: submitted; a later run collects
            status, result.waiting = (
                "submitted",
                {"requests": exc.requests, "batches": exc.batches, **exc.states},
            )
        except KeyboardInterrupt as exc:
            status = "interrupted"
            saved = sum(result.verdicts.values()) + sum(result.failed.values()) + result.refused
            raise Interrupted(f"generate run {run_id} saved {saved} traces") from exc
        finally:
            result.seconds = time.perf_counter() - start
            result.cost = meter.as_dict()
            manifest = {
                "command": "generate",
                "r1v_version": __version__,
                "run_id": run_id,
                "config": cfg.model_dump(mode="json"),
                "teacher": backend.spec,
                "executor": cfg.executor.kind,
                "teacher_identity": result.teacher,
                "prompt_version": PROMPT_VERSION,
                "verifier": VERIFIER_NAME,
                "counts": result.as_dict(),
            }
            store.finish_run(run_id, status, result.as_dict(), manifest)
            if owned:
                backend.close()
    return result


def _grader(backend: Backend, cfg: GenerateConfig) -> TraceGrader | InlineGrader:
    """Grading in this process when the HTTP client runs in a process of its own (nothing here
    then competes with it for the GIL); otherwise in a process of its own, off the GIL of a client
    loop thread or a model running here."""
    if getattr(backend, "client_process", False):
        return InlineGrader(cfg.verify_timeout_s)
    return TraceGrader(cfg.verify_timeout_s)


def _run_round(
    run: _Run, backend: Backend, round_: int, ids: list[str], options: dict[str, Any]
) -> dict[str, int]:
    return _execute(run, backend, _teacher_round(run, backend, round_, ids), options)


def _teacher_round(run: _Run, backend: Backend, round_: int, ids: list[str]) -> _Round:
    def prompt(sample: dict[str, Any]) -> Prompt:
        return build_prompt(
            sample, supports_images=backend.supports_images, image_policy=run.cfg.image_policy
        )

    sampling = Sampling(**run.cfg.sampling.model_dump(), n=run.cfg.n)
    samples = _stream_samples(run.store, ids)
    return _Round(
        round_, round_, sampling, ids, samples, prompt, lambda _: "generated", controls=run.controls
    )


def _adaptive_controls(store: Store, cfg: GenerateConfig, problems: list[str]) -> dict[str, Control] | None:
    """DRLC's per-sample penalty (and budget) for this run's problems; refuses when none is scored."""
    if not cfg.adaptive_length or not problems:
        return None
    controls, unscored = drlc.controls(store, problems, cfg.drlc)
    if unscored == len(problems):
        raise ConfigError(
            f"--adaptive-length: none of the {len(problems)} selected samples has QDAM/VTIA scores; "
            f"run `r1v-data score --store {cfg.store}` first"
        )
    return controls


def _describe_controls(controls: dict[str, Control] | None, cfg: GenerateConfig) -> dict[str, Any]:
    if not controls:
        return {}
    ps = [c.penalty for c in controls.values()]
    return {**cfg.drlc.model_dump(mode="json"), "alpha": cfg.drlc.slope, "floor": cfg.drlc.floor,
            "penalty_min": min(ps), "penalty_max": max(ps), "penalty_mean": round(sum(ps) / len(ps), 4)}  # fmt: skip


def _revise(run: _Run, teacher: Backend, problems: list[str]) -> dict[str, int]:
    """The revision stage: a judge given the reference answer rewrites the latest wrong trace of
    each problem the teacher never solved; the rewrite is verified like any trace."""
    cfg = run.cfg
    assert cfg.reviser is not None
    reviser = teacher if cfg.reviser == teacher.spec else make_backend(cfg.reviser, **cfg.reviser_options)
    attach_store(reviser, run.store, run.writer.run_id)
    try:
        ids = _unsolved(run.store, problems, teacher.identity, cfg.rounds + 1)

        def prompt(sample: dict[str, Any]) -> Prompt:
            return build_revision_prompt(
                sample,
                sample["wrong_text"],
                supports_images=reviser.supports_images,
                image_policy=cfg.image_policy,
            )

        samples = _stream_samples(run.store, ids, wrong_of=teacher.identity)
        sampling = Sampling(**cfg.sampling.model_dump(), n=1)
        spec = _Round(
            cfg.rounds + 1,
            "revise",
            sampling,
            ids,
            samples,
            prompt,
            lambda s: f"revised:{s['wrong_request_id']}",
            REVISE_VERSION,
        )
        options = cfg.teacher_options if reviser is teacher else cfg.reviser_options
        return {**_execute(run, reviser, spec, options), "revision": 1}
    finally:
        if reviser is not teacher:
            reviser.close()


def _execute(run: _Run, backend: Backend, spec: _Round, options: dict[str, Any]) -> dict[str, int]:
    counts = Counter(
        {"round": spec.number, "samples": len(spec.ids), "requests": 0, "skipped": 0, "refused": 0, "sent": 0}
    )
    total = len(spec.ids) * spec.sampling.n

    bill = RoundBill(run.meter, backend.identity, backend.spec, run.result)

    def report(**note: str) -> None:  # requests already done or refused count as finished
        if run.progress:
            finished = counts["sent"] + counts["skipped"] + counts["refused"]
            if cost := bill.note(counts["sent"], total - counts["skipped"] - counts["refused"]):
                note["cost"] = cost
            run.progress(finished, total, run.result.completion_tokens, **note)

    if hasattr(backend, "on_status"):  # a batch backend says what its batches do while they run
        backend.on_status = lambda line: report(note=line)
    report()  # the round's total from the start
    # where the teacher runs decides nothing here: the executor yields one Done per request
    block = TraceBlock(run.writer.run_id, backend.identity, run.cfg.verify_timeout_s)
    work = Work(backend.spec, options, block, "traces", backend, {"grader": run.grader})
    try:
        for done in run.executor.map(work, _requests(run, backend, spec, counts), run.writer):
            run.result.add(done.tally)
            if done.finished:
                run.done.add(done.key)
            counts["sent"] += 1
            report()
    finally:
        bill.close()  # what was spent is spent, also when the round stops early
    report()
    run.result.requests += counts["requests"]
    return dict(counts)


def _finished_request_ids(
    store: Store, retry_failed: bool, teacher: str | None = None
) -> tuple[set[str], bool]:
    """Requests with a trace, refused, or rejected by the server for good (unless `retry_failed`),
    and whether `teacher` has a trace without error among them (one query: a store connection is
    ~50 ms of a run's start). A request that failed otherwise (server down, timeout) is sent again
    on the next run; its error rows stay as the history of its attempts."""
    finished = "('refused')" if retry_failed else "('refused', 'rejected')"
    sql = (
        "SELECT request_id, bool_or(error IS NULL AND teacher = ?) FROM traces "
        f"WHERE error IS NULL OR finish_reason IN {finished} GROUP BY request_id"
    )
    rows = store.query(sql, params=[teacher])[1]
    return {r[0] for r in rows}, any(r[1] for r in rows)


def _trust_proven_settings(backend: Backend, proven: bool) -> None:
    """A teacher with traces in the store has accepted its settings before; tell a backend that
    stops on a run of identical rejections (the openai: one) not to stop then."""
    if proven and (settings_proven := getattr(backend, "settings_proven", None)) is not None:
        settings_proven()


def _unsolved(store: Store, ids: list[str], teacher: str, before_round: int) -> list[str]:
    """Those of `ids` with no correct trace from `teacher` in the rounds before `before_round` (nor
    a refusal: it would refuse again). Only earlier rounds count, so a run resumed in the middle
    of a round sends that round the same problems as an uninterrupted run, even where one of a
    problem's samples in this round was already correct before the kill."""
    sql = (
        "SELECT DISTINCT sample_id FROM traces WHERE teacher = ? AND (round IS NULL OR round < ?) AND "
        "(verdict = 'correct' OR finish_reason = 'refused')"
    )
    solved = {r[0] for r in store.query(sql, params=[teacher, before_round])[1]}
    return [i for i in ids if i not in solved]


def _stream_samples(store: Store, ids: list[str], wrong_of: str | None = None) -> Iterator[dict[str, Any]]:
    """The selected samples, images included, a batch at a time. With `wrong_of`, each comes with
    that teacher's latest wrong trace (`wrong_text`, `wrong_request_id`), and samples without one
    are left out."""
    sql, params = f"SELECT {_SAMPLE_COLUMNS} FROM samples SEMI JOIN wanted USING (sample_id)", []
    if wrong_of is not None:
        sql = f"""SELECT s.*, w.wrong_text, w.wrong_request_id FROM ({sql}) s JOIN (
                    SELECT sample_id, arg_max(text, round * 1000000 + sample_index) AS wrong_text,
                           arg_max(request_id, round * 1000000 + sample_index) AS wrong_request_id
                    FROM traces WHERE teacher = ? AND verdict = 'wrong' GROUP BY sample_id
                  ) w USING (sample_id)"""
        params = [wrong_of]
    return store.stream(sql, ids, params)


def _requests(
    run: _Run, backend: Backend, spec: _Round, counts: Counter[str]
) -> Iterator[tuple[GenRequest, Pending]]:
    """Requests not yet in the store, with what their rows need, built lazily as they are pulled."""
    sent: set[str] = set()  # a request asked twice in one round (identical samples) is sent once
    for sample in spec.samples:
        prompt = spec.prompt(sample)
        for index in range(spec.sampling.n):
            counts["requests"] += 1
            seed = (
                None if spec.sampling.seed is None else spec.sampling.seed + 1000 * (spec.number - 1) + index
            )
            sampling = replace(spec.sampling, seed=seed)
            if spec.controls and (ctl := spec.controls.get(sample["sample_id"])):
                budget = ctl.max_tokens or sampling.max_tokens
                sampling = replace(sampling, repetition_penalty=ctl.penalty, max_tokens=budget)
            if prompt.refusal:
                _refuse(run, sample, prompt.refusal, backend.identity, spec.number, index, sampling, counts)
                continue
            request = GenRequest("", prompt.messages, sampling, prompt.assistant_prefix)
            rendered = backend.render(request)
            # n is left out: asking for more samples later must not redo the ones already made
            identity = {k: v for k, v in sampling.as_dict().items() if k != "n"}
            rid = text.stable_hash(
                sample["sample_id"], backend.identity, rendered, identity, index, spec.label
            )
            if rid in run.done or rid in sent:
                counts["skipped"] += 1
                run.result.skipped += 1
                continue
            request.request_id = rid
            sent.add(rid)
            prefix = prompt.assistant_prefix if backend.prefills else ""
            job = Pending(
                sample,
                spec.number,
                index,
                sampling,
                rendered,
                prefix,
                spec.provenance(sample),
                spec.prompt_version,
            )
            run.result.sent += 1
            yield request, job


def _refuse(
    run: _Run,
    sample: dict[str, Any],
    reason: str,
    teacher: str,
    round_: int,
    index: int,
    sampling: Sampling,
    counts: Counter[str],
) -> None:
    # a refusal does not depend on the round: one row per (sample, teacher, index)
    rid = text.stable_hash(sample["sample_id"], teacher, "refused", reason, index)
    if rid in run.done:
        counts["skipped"] += 1
        run.result.skipped += 1
        return
    run.done.add(rid)
    counts["refused"] += 1
    run.result.refused += 1
    row = base_row(rid, sample, teacher, round_, index, sampling, run.writer.run_id)
    row.update(error=f"refused: {reason}", finish_reason="refused", verdict="error")
    run.writer.add(row)
