"""`run_calibrate`: a teacher at fixed repetition penalties on a sample spread over DRLC's
difficulty order, summed up per penalty and difficulty third, and the `drlc.penalty_range` fitted
for a target (`r1v_data/alcotd/calibration.py` has the method).

Nothing is added to the store's traces: calibration completions are made at penalties DRLC would
not set, so they are not candidates for training data. The run, its table and the fit are
recorded in `runs` and `manifests`, and `out` gets the fitted settings as YAML.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1v_data import __version__, text
from r1v_data.alcotd import drlc
from r1v_data.alcotd.calibration import (
    GROUPS,
    Cell,
    Fit,
    Outcome,
    Target,
    fit,
    question_reuse,
    spread,
    summarise,
    thirds,
)
from r1v_data.backends import Backend, GenRequest, GenResult, Sampling, make_backend
from r1v_data.backends.prompts import build_prompt
from r1v_data.config import CalibrateConfig
from r1v_data.errors import ConfigError, Interrupted
from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify_pool import VerifierPool
from r1v_data.store import Store

# (completions finished, completions to make, completion tokens so far)
Progress = Callable[[int, int | None, int], None]

_COLUMNS = "sample_id, question, options, answer, answer_type, images, caption"
_FORMED = ("boxed", "answer_tag")


@dataclass
class CalibrateResult:
    run_id: str
    teacher: str
    samples: int = 0
    penalties: list[float] = field(default_factory=list)
    completions: int = 0
    failed: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cells: list[Cell] = field(default_factory=list)
    fit: Fit | None = None
    out: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("cells", "fit")}
        fitted = self.fit and {
            "penalty_range": list(self.fit.penalty_range),
            "met": self.fit.met,
            "why": self.fit.why,
        }
        return {**out, "cells": [c.as_dict() for c in self.cells], "fit": fitted}


@dataclass
class _Job:
    penalty: float
    group: str
    sample: dict[str, Any]
    prefix: str  # what the completion continues, when the backend prefilled it


def run_calibrate(cfg: CalibrateConfig, progress: Progress | None = None) -> CalibrateResult:
    with Store.open(cfg.store, write=True) as store:
        scored = _scored(store, cfg)  # before a model is loaded: an unscored store is refused at once
        backend = make_backend(cfg.teacher, **cfg.teacher_options)
        try:
            groups = _choose(store, cfg, scored, backend.supports_images)
        except BaseException:
            backend.close()
            raise
        sql = f"SELECT {_COLUMNS} FROM samples SEMI JOIN wanted USING (sample_id)"
        samples = list(store.stream(sql, list(groups)))
        run_id = store.begin_run("calibrate")
        result = CalibrateResult(run_id, backend.identity, len(samples), cfg.penalties)
        start, status = time.perf_counter(), "failed"
        try:
            with VerifierPool(timeout_s=5.0) as verifier:
                outcomes = list(_sweep(backend, verifier, cfg, samples, groups, result, progress))
            result.cells = summarise(outcomes)
            if not any(c.group == GROUPS[0] for c in result.cells):
                raise ConfigError(
                    f"calibrate: {cfg.teacher} answered nothing in the easiest third ({result.failed} requests "
                    "failed); see its errors, or give a larger --sample"
                )
            result.fit = fit(result.cells, Target(cfg.shorten, cfg.max_accuracy_loss, cfg.max_formed_loss))
            result.out = _write_settings(cfg, result) if cfg.out else None
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"
            raise Interrupted(
                f"calibrate run {run_id} saved nothing (a calibration is kept only whole)"
            ) from exc
        finally:
            result.seconds = round(time.perf_counter() - start, 1)
            manifest = {"command": "calibrate", "r1v_version": __version__, "run_id": run_id,
                        "config": cfg.model_dump(mode="json"), "counts": result.as_dict()}  # fmt: skip
            store.finish_run(run_id, status, result.as_dict(), manifest)
            backend.close()
    return result


def _scored(store: Store, cfg: CalibrateConfig) -> set[str]:
    scored = set(drlc.read_scores(store))
    if len(scored) < 3:
        raise ConfigError(
            f"calibrate needs 3 or more samples with QDAM/VTIA scores, found {len(scored)}; run "
            f"`r1v-data score --store {cfg.store}` first"
        )
    return scored


def _choose(store: Store, cfg: CalibrateConfig, scored: set[str], sees_images: bool) -> dict[str, str]:
    """`cfg.sample` scored samples with a reference answer that the teacher can read (a text-only
    one reads captions, not images), evenly spread over DRLC's order from easiest to hardest, and
    each one's difficulty third."""
    where = ["answer IS NOT NULL", *([f"({cfg.where})"] if cfg.where else [])]
    if not sees_images:
        where.append("(n_images = 0 OR caption <> '')" if cfg.image_policy == "caption" else "n_images = 0")
    ids = [i for i in store.sample_ids(" AND ".join(where)) if i in scored]
    if len(ids) < 3:
        raise ConfigError(
            f"calibrate needs 3 or more scored samples with a reference answer that {cfg.teacher} can "
            f"read, found {len(ids)} (a text-only teacher reads captions, not images)"
        )
    controls, _ = drlc.controls(store, ids, cfg.drlc)
    ranked = sorted(ids, key=lambda i: (controls[i].score, i))  # easiest (lowest score) first
    chosen = spread(ranked, cfg.sample)
    return thirds(chosen)


def _sweep(
    backend: Backend,
    verifier: VerifierPool,
    cfg: CalibrateConfig,
    samples: list[dict[str, Any]],
    groups: dict[str, str],
    result: CalibrateResult,
    progress: Progress | None,
) -> Iterator[Outcome]:
    jobs: dict[str, _Job] = {}
    requests = list(_requests(backend, cfg, samples, groups, jobs))
    total = len(requests)
    if progress:
        progress(0, total, 0)
    for done, res in enumerate(backend.generate(requests), 1):
        outcome = _outcome(res, jobs.pop(res.request_id), verifier, result)
        if outcome is not None:
            yield outcome
        if progress:
            progress(done, total, result.completion_tokens)


def _requests(
    backend: Backend,
    cfg: CalibrateConfig,
    samples: list[dict[str, Any]],
    groups: dict[str, str],
    jobs: dict[str, _Job],
) -> Iterator[GenRequest]:
    """Every sample at every penalty, all else equal (one seed per sample, as generate sets it)."""
    base = cfg.sampling.model_dump()
    for index, sample in enumerate(samples):
        prompt = build_prompt(sample, supports_images=backend.supports_images, image_policy=cfg.image_policy)
        if prompt.refusal:
            continue  # a text-only teacher and an image without a caption: nothing to measure
        seed = None if cfg.sampling.seed is None else cfg.sampling.seed + index
        for penalty in cfg.penalties:
            sampling = Sampling(**{**base, "repetition_penalty": penalty, "seed": seed})
            rid = text.stable_hash("calibrate", sample["sample_id"], backend.identity, sampling.as_dict())
            prefix = prompt.assistant_prefix if backend.prefills else ""
            jobs[rid] = _Job(penalty, groups[sample["sample_id"]], sample, prefix)
            yield GenRequest(rid, prompt.messages, sampling, prompt.assistant_prefix)


def _outcome(res: GenResult, job: _Job, verifier: VerifierPool, result: CalibrateResult) -> Outcome | None:
    result.completion_tokens += res.completion_tokens or 0
    if res.error is not None or res.text is None:
        result.failed += 1
        return None
    result.completions += 1
    parsed = parse_completion(res.text, res.finish_reason, assistant_prefix=job.prefix)
    s = job.sample
    verdict = verifier.verify(parsed.answer, s["answer"], s["answer_type"], s["options"])
    formed = parsed.think_closed and parsed.answer_source in _FORMED
    tokens = res.completion_tokens if res.completion_tokens is not None else len(res.text) // 4
    reuse = question_reuse(s["question"], res.text)
    return Outcome(job.penalty, job.group, tokens, verdict.verdict == "correct", formed, reuse)


def _write_settings(cfg: CalibrateConfig, result: CalibrateResult) -> str:
    """The fitted `drlc` section, usable as `--config` of score and generate."""
    assert cfg.out is not None and result.fit is not None
    low, high = result.fit.penalty_range
    settings = {"drlc": {"penalty_range": [low, high], "beta": cfg.drlc.beta, "gamma": cfg.drlc.gamma,
                         "max_tokens_range": cfg.drlc.max_tokens_range}}  # fmt: skip
    header = (
        f"# r1v-data calibrate (run {result.run_id}): {result.teacher}, {result.samples} samples, penalties "
        f"{cfg.penalties}\n# target: {cfg.shorten:.0%} fewer tokens on the easiest third, accuracy loss <= "
        f"{cfg.max_accuracy_loss:.0%} -> {'met' if result.fit.met else 'NOT met'}: {result.fit.why}\n"
    )
    path = Path(cfg.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return str(path)
