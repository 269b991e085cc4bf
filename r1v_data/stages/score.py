"""`run_score`: AL-CoTD's QDAM and VTIA scores of every sample, into the scores table.

QDAM scores the vision side (image clarity, measured locally, and image necessity) and the text
side (question quality, difficulty, reasoning demand); VTIA scores how deeply the question
integrates the image. The judged properties come from a judge model through any backend when
one is named, else from the local estimators. Each property is stored in [0, 1], and combined:

    S_v = mean(image_clarity, image_necessity)   (clarity left out for a sample without images)
    S_t = mean(question_quality, difficulty, reasoning_demand)
    S_I = integration

Scores are cached by (sample, scorer, version): a second run scores only what is missing, and a
judge's failures (recorded with a null value and the reason) are asked again on the next run.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any

from r1v_data import __version__, executors
from r1v_data.alcotd import drlc
from r1v_data.alcotd.clarity import CLARITY_VERSION, sample_clarity
from r1v_data.alcotd.estimators import ESTIMATOR_VERSION, estimate
from r1v_data.backends import Backend, Message, attach_store, make_backend
from r1v_data.backends.pricing import Meter, load_prices
from r1v_data.backends.prompts import visible_question
from r1v_data.config import ScoreConfig
from r1v_data.errors import Interrupted
from r1v_data.executors import Done, Executor, Resources, Rows, Work, make_executor
from r1v_data.grading import judge
from r1v_data.store import PartWriter, Store, score_row

SCORER_VERSIONS = {"qdam": "qdam/1", "vtia": "vtia/1"}
JUDGED = {
    "qdam": ("image_necessity", "question_quality", "difficulty", "reasoning_demand"),
    "vtia": ("integration",),
}
COMBINED = {"qdam": {"S_v": ("image_clarity", "image_necessity"), "S_t": JUDGED["qdam"][1:]},
            "vtia": {"S_I": ("integration",)}}  # fmt: skip
CACHE_NAME = {"qdam": "S_t", "vtia": "S_I"}  # present and non-null = this sample is scored
RUBRIC_VERSION = "rubric/1"
_RUBRICS = {
    "qdam": """Rate this visual question for a reasoning dataset. Give each property an integer from 1 to 5.
- image_necessity: 1 = answerable without the image; 5 = impossible without it.
- question_quality: 1 = ambiguous, malformed or unanswerable; 5 = clear and well-posed with one correct answer.
- difficulty: 1 = trivial for a young pupil; 5 = competition or olympiad level.
- reasoning_demand: 1 = a single look-up or recall; 5 = many dependent reasoning steps.
Reply with only this JSON object and nothing else:
{"image_necessity": N, "question_quality": N, "difficulty": N, "reasoning_demand": N}""",
    "vtia": """Rate how deeply this question integrates the image with the text, as an integer from 1 to 5:
1 = a what/where look-up of one visible thing; 3 = combines a few visual facts with the text;
5 = why/how reasoning over several related objects in the image together with the text.
Reply with only this JSON object and nothing else:
{"integration": N}""",
}

Progress = Callable[[int, int], None]


@dataclass
class ScoreResult:
    run_id: str
    source: str  # "local" or the judge's identity
    samples: int = 0
    scored: Counter[str] = field(default_factory=Counter)  # per scorer
    cached: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    judge_calls: int = 0
    prompt_tokens: int = 0  # the judge's, as it reported them
    completion_tokens: int = 0
    cost: dict[str, Any] = field(default_factory=dict)  # usd (None without a price) by judge
    seconds: float = 0.0
    agreement: dict[str, Any] = field(default_factory=dict)
    preview: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


def scorer_version(scorer: str, judge_identity: str | None) -> str:
    """What the cache keys on: the scorer, its estimator or judge and rubric, and clarity."""
    how = ESTIMATOR_VERSION if judge_identity is None else f"judge:{judge_identity}+{RUBRIC_VERSION}"
    return f"{SCORER_VERSIONS[scorer]}+{how}" + (f"+{CLARITY_VERSION}" if scorer == "qdam" else "")


def run_score(cfg: ScoreConfig, progress: Progress | None = None) -> ScoreResult:
    executors.require(cfg.executor, cfg.judge)
    with Store.open(cfg.store, write=True) as store:
        ids = store.sample_ids(cfg.where, cfg.limit)  # refuses a malformed --where before any work
        backend = make_backend(cfg.judge, **cfg.judge_options) if cfg.judge else None
        run_id = store.begin_run("score")
        attach_store(backend, store, run_id)  # a batch judge resumes its recorded batches
        result = ScoreResult(run_id, backend.identity if backend else "local", samples=len(ids))
        start, status = time.perf_counter(), "failed"
        try:
            with (
                store.writer("scores", run_id, flush_rows=2048) as writer,
                closing(make_executor(cfg.executor)) as executor,
            ):
                for scorer in dict.fromkeys(cfg.scorers):
                    _score_all(store, writer, scorer, ids, backend, cfg, result, progress, executor)
            result.agreement = agreement(store, ids)
            result.preview = penalty_preview(store, ids, cfg)
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"
            raise Interrupted(
                f"score run {run_id} saved {sum(result.scored.values())} samples' scores"
            ) from exc
        finally:
            result.seconds = time.perf_counter() - start
            result.cost = _cost(cfg, backend, result)
            manifest = {"command": "score", "r1v_version": __version__, "run_id": run_id,
                        "config": cfg.model_dump(mode="json"), "counts": result.as_dict()}  # fmt: skip
            store.finish_run(run_id, status, result.as_dict(), manifest)
            if backend is not None:
                backend.close()
    return result


def _cost(cfg: ScoreConfig, backend: Backend | None, result: ScoreResult) -> dict[str, Any]:
    if backend is None:
        return {}
    meter = Meter(load_prices(cfg.prices))
    meter.charge(backend.identity, backend.spec, result.prompt_tokens, result.completion_tokens)
    return meter.as_dict()


def _score_all(
    store: Store,
    writer: PartWriter,
    scorer: str,
    ids: list[str],
    backend: Backend | None,
    cfg: ScoreConfig,
    result: ScoreResult,
    progress: Progress | None,
    executor: Executor,
) -> None:
    version = scorer_version(scorer, backend.identity if backend else None)
    done = _cached(store, ids, scorer, version)
    todo = [i for i in ids if i not in done]
    result.cached[scorer] += len(ids) - len(todo)
    samples = store.stream(
        "SELECT sample_id, question, images, caption FROM samples SEMI JOIN wanted USING (sample_id)", todo
    )
    block = ScoreBlock(scorer, version, writer.run_id, cfg.judge_max_tokens)
    work = Work(cfg.judge, cfg.judge_options, block, "scores", backend)
    if progress:
        progress(0, len(todo))  # the total from the start
    for count, finished in enumerate(executor.map(work, samples, writer), 1):
        (result.scored if finished.finished else result.failed)[scorer] += 1
        tally = finished.tally or Tally()
        result.judge_calls += tally.calls
        result.prompt_tokens += tally.prompt_tokens
        result.completion_tokens += tally.completion_tokens
        if progress:
            progress(count, len(todo))


@dataclass(frozen=True)
class ScoreBlock:
    """score's block function: one scorer's rows for each sample of a block (judged by the backend,
    or by the local estimators when there is none), where the judge runs. A sample is finished
    when its combined score is known; the tally is its judge calls and tokens."""

    scorer: str
    version: str
    run_id: str
    judge_max_tokens: int

    def __call__(
        self, backend: Backend | None, samples: Iterable[dict[str, Any]], resources: Resources
    ) -> Iterator[tuple[Rows, Done]]:
        if backend is None:
            wanted = JUDGED[self.scorer]
            judged: Iterator[tuple[dict[str, Any], Judged, Tally]] = (
                (s, {n: v for n, v in estimate(s).items() if n in wanted}, Tally()) for s in samples
            )
        else:
            judged = _judged(backend, self.scorer, iter(samples), self.judge_max_tokens)
        for sample, values, tally in judged:
            props = _properties(sample, self.scorer, values)
            sid = sample["sample_id"]
            rows = [score_row(self.run_id, sid, None, self.scorer, self.version, name, value, detail)
                    for name, (value, detail) in props.items()]  # fmt: skip
            yield rows, Done(sid, props[CACHE_NAME[self.scorer]][0] is not None, tally)


def _cached(store: Store, ids: list[str], scorer: str, version: str) -> set[str]:
    sql = """SELECT DISTINCT sample_id FROM scores SEMI JOIN wanted USING (sample_id)
             WHERE scorer = ? AND version = ? AND name = ? AND value IS NOT NULL"""
    return {r["sample_id"] for r in store.stream(sql, ids, [scorer, version, CACHE_NAME[scorer]])}


Judged = dict[str, tuple[float | None, str]]  # name -> (value in [0, 1] or None, detail)


def _judged(
    backend: Backend, scorer: str, samples: Iterator[dict[str, Any]], max_tokens: int
) -> Iterator[tuple[dict[str, Any], Judged, Tally]]:
    """The judge's values for each sample, 1-5 mapped to [0, 1]; failures as None with the reason;
    and the judge calls and tokens each took."""
    names = JUDGED[scorer]
    held: dict[str, dict[str, Any]] = {}

    def asks() -> Iterator[judge.Ask]:
        for sample in samples:
            messages, refusal = _judge_messages(sample, scorer, backend.supports_images)
            if refusal:
                failures.append((sample, refusal))
                continue
            held[sample["sample_id"]] = sample
            yield judge.Ask(sample["sample_id"], messages)

    failures: list[tuple[dict[str, Any], str]] = []
    sampling = replace(judge.JUDGE_SAMPLING, max_tokens=max_tokens)
    usage, seen = _Tokens(), (0, 0)
    for answer in judge.ask_json(backend, asks(), judge.integer_fields(names, 1, 5), sampling, usage=usage):
        sample = held.pop(answer.key)
        values = answer.values or {}
        judged = {n: ((values[n] - 1) / 4 if n in values else None, answer.detail) for n in names}
        now = (usage.prompt_tokens, usage.completion_tokens)  # the tokens since the last answer
        yield sample, judged, Tally(answer.attempts, now[0] - seen[0], now[1] - seen[1])
        seen = now
        yield from ((s, {n: (None, why) for n in names}, Tally()) for s, why in _drain(failures))
    yield from ((s, {n: (None, why) for n in names}, Tally()) for s, why in _drain(failures))


@dataclass
class _Tokens:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Tally:
    """What one sample's judging cost: calls and the judge's tokens (summed on the driver)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _drain(items: list[Any]) -> Iterator[Any]:
    while items:
        yield items.pop()


def _judge_messages(
    sample: dict[str, Any], scorer: str, sees_images: bool
) -> tuple[list[Message], str | None]:
    question, images, refusal = visible_question(sample, supports_images=sees_images, who="judge")
    if refusal:
        return [], refusal
    return [Message("user", f"{_RUBRICS[scorer]}\n\nQuestion:\n{question}", images)], None


def _properties(sample: dict[str, Any], scorer: str, judged: Judged) -> Judged:
    """The properties of one sample and the combined scores they make."""
    values = dict(judged)
    if scorer == "qdam":
        clarity = sample_clarity(sample["images"])
        if clarity is not None:  # no image: nothing to be clear, left out of S_v
            values["image_clarity"] = (round(clarity, 6), CLARITY_VERSION)
    for name, parts in COMBINED[scorer].items():
        present = [values[p][0] for p in parts if p in values]
        ok = bool(present) and all(v is not None for v in present)
        values[name] = (statistics.fmean(present) if ok else None, "mean of " + ", ".join(parts))  # type: ignore[arg-type]
    return values


# ---- reports ------------------------------------------------------------------------------------
def agreement(store: Store, ids: list[str]) -> dict[str, Any]:
    """Spearman correlations of the latest scores with the source's difficulty levels, and of the
    local estimators with a judge where the store holds both for the same samples."""
    sql = """SELECT s.sample_id, s.name, s.version, s.value, m.difficulty FROM scores s
             JOIN samples m USING (sample_id) SEMI JOIN wanted USING (sample_id)
             WHERE s.request_id IS NULL AND s.scorer IN ('qdam', 'vtia') AND s.value IS NOT NULL
             QUALIFY row_number() OVER (PARTITION BY s.sample_id, s.name, s.version ORDER BY s.created_at DESC) = 1"""
    local: dict[str, dict[str, float]] = {}
    judged: dict[str, dict[str, float]] = {}
    levels: dict[str, int] = {}
    for r in store.stream(sql, ids):
        target = judged if "judge:" in r["version"] else local
        target.setdefault(r["name"], {})[r["sample_id"]] = r["value"]
        if r["difficulty"] is not None:
            levels[r["sample_id"]] = r["difficulty"]
    out: dict[str, Any] = {}
    for label, table in (("local_vs_levels", local), ("judge_vs_levels", judged)):
        out[label] = {n: _spearman_on(v, levels) for n, v in sorted(table.items()) if _spearman_on(v, levels)}
    out["local_vs_judge"] = {
        n: s for n in sorted(set(local) & set(judged)) if (s := _spearman_on(local[n], judged[n]))
    }
    return {k: v for k, v in out.items() if v}


def _spearman_on(a: dict[str, float], b: dict[str, float]) -> dict[str, float] | None:
    keys = [k for k in a if k in b]
    if len(keys) < 3:
        return None
    rho = spearman([a[k] for k in keys], [b[k] for k in keys])
    return None if rho is None else {"rho": round(rho, 3), "n": len(keys)}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    import numpy as np

    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: list[float]) -> Any:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    order = arr.argsort(kind="stable")
    ranks = np.empty(len(arr))
    ranks[order] = np.arange(len(arr))
    for v in np.unique(arr):  # ties share their mean rank
        mask = arr == v
        ranks[mask] = ranks[mask].mean()
    return ranks


def penalty_preview(store: Store, ids: list[str], cfg: ScoreConfig) -> dict[str, Any]:
    """What `generate --adaptive-length` would set for these samples: P overall and by level."""
    ctl, unscored = drlc.controls(store, ids, cfg.drlc)
    if not ctl:
        return {}
    ps = [c.penalty for c in ctl.values()]
    sql = "SELECT sample_id, difficulty FROM samples SEMI JOIN wanted USING (sample_id) WHERE difficulty IS NOT NULL"
    levels = {r["sample_id"]: r["difficulty"] for r in store.stream(sql, ids)}
    by_level: dict[int, list[float]] = {}
    for sid, c in ctl.items():
        if sid in levels:
            by_level.setdefault(levels[sid], []).append(c.penalty)
    return {
        "unscored": unscored,
        "penalty": {"min": min(ps), "mean": round(statistics.fmean(ps), 4), "median": statistics.median(ps),
                    "max": max(ps)},
        "by_level": [{"level": lv, "n": len(v), "mean_penalty": round(statistics.fmean(v), 4)}
                     for lv, v in sorted(by_level.items())],
    }  # fmt: skip
