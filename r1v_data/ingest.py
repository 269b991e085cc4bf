"""`run_ingest`: read sources, turn rows into samples, and store them once each.

Identity is content: the same problem ingested twice, or from two sources, is one sample with
one provenance row per occurrence. A row that cannot become a sample goes to the quarantine
with its reason and location; only a source that cannot be opened stops the command, and then
before anything is written.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from r1v_data import __version__, text
from r1v_data.config import IngestConfig
from r1v_data.errors import ConfigError
from r1v_data.images import ImageLimits, ImageRejected, load_image
from r1v_data.presets import Preset, resolve
from r1v_data.sources import RAW_LIMIT, Record, Source, open_source
from r1v_data.store import PartWriter, Store, utcnow

Progress = Callable[[str, int, int | None], None]  # (source name, rows done, total or None)
CHUNK = 64  # rows in flight per decoding thread; progress is reported every CHUNK rows


@dataclass
class SourceCounts:
    name: str
    spec: str
    preset: str
    read: int = 0
    added: int = 0
    new_provenance: int = 0  # a sample already stored, seen at a new place
    unchanged: int = 0  # exactly this row was ingested before
    quarantined: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "preset": self.preset,
            "read": self.read,
            "added": self.added,
            "new_provenance": self.new_provenance,
            "unchanged": self.unchanged,
            "quarantined": dict(self.quarantined),
        }


@dataclass
class IngestResult:
    run_id: str
    store: Path
    sources: list[SourceCounts]

    def total(self, key: str) -> int:
        if key == "quarantined":
            return sum(sum(s.quarantined.values()) for s in self.sources)
        return sum(getattr(s, key) for s in self.sources)

    def quarantine_reasons(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for s in self.sources:
            out.update(s.quarantined)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "store": str(self.store),
            **{
                k: self.total(k)
                for k in ("read", "added", "new_provenance", "unchanged", "quarantined")
            },
            "quarantine_reasons": dict(self.quarantine_reasons()),
            "sources": [s.as_dict() for s in self.sources],
        }


Writers = tuple[PartWriter, PartWriter, PartWriter]  # samples, provenance, quarantine


@dataclass
class Plan:
    """A source opened and understood, before anything is written."""

    source: Source
    preset: Preset
    mapping: dict[str, tuple[str, ...]]
    image_base: Path
    image_root: Path


@dataclass
class Prepared:
    location: str
    sample: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
    raw: str | None = None
    image_bytes: int = 0


def run_ingest(cfg: IngestConfig, progress: Progress | None = None) -> IngestResult:
    if cfg.name and len(cfg.sources) > 1:
        raise ConfigError("--name names one source; ingest several sources in separate commands")
    plans = [_plan(spec, cfg) for spec in cfg.sources]  # fail here, before writing anything
    limits = ImageLimits(cfg.max_pixels, cfg.max_image_bytes, cfg.allow_remote_images)
    with Store.open(cfg.store, write=True, create=True) as store:
        run_id = store.begin_run("ingest")
        known = _Known.load(store)
        results: list[SourceCounts] = []
        status = "failed"
        try:
            with (
                store.writer("samples", run_id, flush_rows=256) as samples,
                store.writer("provenance", run_id, flush_rows=4096) as provenance,
                store.writer("quarantine", run_id, flush_rows=1024) as quarantine,
                ThreadPoolExecutor(cfg.workers) as pool,
            ):
                for plan in plans:
                    counts = SourceCounts(plan.source.name, plan.source.spec, plan.preset.name)
                    results.append(counts)
                    writers = (samples, provenance, quarantine)
                    _ingest_source(
                        plan, cfg, limits, pool, known, writers, run_id, counts, progress
                    )
            status = "ok"
        finally:
            result = IngestResult(run_id, store.root, results)
            store.finish_run(run_id, status, result.as_dict(), _manifest(cfg, plans, result))
    return result


def _plan(spec: str, cfg: IngestConfig) -> Plan:
    source = open_source(spec, split=cfg.split, records_key=cfg.records_key)
    if cfg.name:
        source.name = cfg.name
    columns, first = source.peek_columns()
    preset, mapping = resolve(cfg.preset, cfg.mapping, columns, first)
    root = (cfg.image_root or source.base_dir).absolute()
    return Plan(source, preset, mapping, root / preset.image_dir, root)


class _Known:
    """What the store holds already, so a re-run adds nothing it has."""

    def __init__(
        self, samples: set[str], provenance: set[tuple[str, str, str]], quarantine: set[str]
    ):
        self.samples, self.provenance, self.quarantine = samples, provenance, quarantine

    @classmethod
    def load(cls, store: Store) -> _Known:
        con = store.connect()
        try:
            samples = {r[0] for r in con.sql("SELECT sample_id FROM samples").fetchall()}
            prov = set(con.sql("SELECT sample_id, source, location FROM provenance").fetchall())
            quarantine = {r[0] for r in con.sql("SELECT quarantine_id FROM quarantine").fetchall()}
        finally:
            con.close()
        return cls(samples, prov, quarantine)


def _ingest_source(
    plan: Plan,
    cfg: IngestConfig,
    limits: ImageLimits,
    pool: ThreadPoolExecutor,
    known: _Known,
    writers: Writers,
    run_id: str,
    counts: SourceCounts,
    progress: Progress | None,
) -> None:
    records: Iterator[Record] = plan.source.records()
    if cfg.limit:
        records = islice(records, cfg.limit)
    total = plan.source.total
    if total is not None and cfg.limit:
        total = min(total, cfg.limit)
    for prep in _prepared_in_order(records, plan, limits, pool, window=CHUNK * cfg.workers):
        _store_one(prep, plan.source.name, known, writers, run_id, counts)
        if progress and counts.read % CHUNK == 0:
            progress(plan.source.name, counts.read, total)
    if progress:
        progress(plan.source.name, counts.read, total)


def _prepared_in_order(
    records: Iterator[Record],
    plan: Plan,
    limits: ImageLimits,
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[Prepared]:
    """Decode rows on the pool, `window` ahead of the consumer, yielding in source order, so
    writing parts (on this thread) overlaps with decoding images (on the pool)."""
    pending: deque[Future[Prepared]] = deque()
    for record in records:
        pending.append(pool.submit(_prepare, record, plan, limits))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _store_one(
    prep: Prepared, name: str, known: _Known, writers: Writers, run_id: str, counts: SourceCounts
) -> None:
    samples, provenance, quarantine = writers
    counts.read += 1
    now = utcnow()
    if prep.sample is None:
        reason = prep.reason or "unknown"
        counts.quarantined[reason] += 1
        qid = text.stable_hash(name, prep.location, reason)
        if qid not in known.quarantine:
            known.quarantine.add(qid)
            quarantine.add(
                {
                    "quarantine_id": qid,
                    "source": name,
                    "location": prep.location,
                    "reason": reason,
                    "detail": prep.detail,
                    "raw": prep.raw,
                    "run_id": run_id,
                    "created_at": now,
                }
            )
        return
    sid = prep.sample["sample_id"]
    key = (sid, name, prep.location)
    if key in known.provenance:
        counts.unchanged += 1
        return
    known.provenance.add(key)
    provenance.add(
        {
            "sample_id": sid,
            "source": name,
            "source_id": prep.sample["source_id"],
            "location": prep.location,
            "answer": prep.sample["answer"],
            "run_id": run_id,
            "created_at": now,
        }
    )
    if sid in known.samples:
        counts.new_provenance += 1
        return
    known.samples.add(sid)
    counts.added += 1
    samples.add(
        {**prep.sample, "source": name, "run_id": run_id, "created_at": now},
        size_hint=prep.image_bytes,
    )


def _prepare(record: Record, plan: Plan, limits: ImageLimits) -> Prepared:
    """One source row -> a sample row (without store bookkeeping) or a quarantine reason."""
    if record.error:
        return Prepared(
            record.location, reason=record.error[0], detail=record.error[1], raw=record.raw
        )
    row = record.data or {}
    try:
        if plan.preset.transform:
            row = plan.preset.transform(row)
        sample = _build_sample(row, plan)
        images = [
            load_image(ref, plan.image_base, limits, plan.image_root)
            for ref in _image_refs(row, plan.mapping.get("images", ()))
        ]
    except ImageRejected as exc:
        return Prepared(record.location, reason=exc.reason, detail=exc.detail, raw=_raw(row))
    except _BadRow as exc:
        return Prepared(record.location, reason=exc.reason, detail=exc.detail, raw=_raw(row))
    sample["images"] = images
    sample["sample_id"] = text.sample_id(sample["question"], [im["sha256"] for im in images])
    return Prepared(
        record.location, sample=sample, image_bytes=sum(len(im["bytes"]) for im in images)
    )


class _BadRow(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _pick(row: dict[str, Any], columns: tuple[str, ...]) -> Any:
    for col in columns:
        if row.get(col) is not None:
            return row[col]
    return None


def _build_sample(row: dict[str, Any], plan: Plan) -> dict[str, Any]:
    m = plan.mapping
    question = _pick(row, m.get("question", ()))
    if isinstance(question, int | float) and not isinstance(question, bool):
        question = str(question)
    if not isinstance(question, str) or not question.strip():
        raise _BadRow(
            "missing question", f"no question text in column(s) {list(m.get('question', ()))}"
        )
    try:
        options = text.parse_options(_pick(row, m.get("options", ())))
    except ValueError as exc:
        raise _BadRow("invalid options", str(exc)) from exc
    answer = text.answer_to_text(_pick(row, m.get("answer", ())))
    letter = text.match_option_letter(answer, options) if answer and options else None
    raw_difficulty = _pick(row, m.get("difficulty", ()))
    used = {c for cols in m.values() for c in cols}
    extra = {k: _jsonable(v) for k, v in row.items() if k not in used}
    difficulty = text.parse_difficulty(raw_difficulty)
    if raw_difficulty is not None and difficulty is None:
        extra["difficulty_raw"] = _jsonable(raw_difficulty)  # kept, not lost
    return {
        "source_id": _str_or_none(_pick(row, m.get("source_id", ()))),
        "question": text.render_question(text.normalise_placeholders(question.strip()), options),
        "options": options,
        "answer": letter or answer,
        "answer_type": text.answer_type(letter or answer, is_choice=letter is not None),
        "solution": _str_or_none(_pick(row, m.get("solution", ()))),
        "subject": _str_or_none(_pick(row, m.get("subject", ()))),
        "difficulty": difficulty,
        "caption": _str_or_none(_pick(row, m.get("caption", ()))),
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
    }


def _image_refs(row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    refs: list[Any] = []
    for col in columns:
        value = row.get(col)
        if value is None:
            continue
        if isinstance(value, list):
            refs.extend(v for v in value if v is not None)
        else:
            refs.append(value)
    return refs


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _raw(row: dict[str, Any]) -> str:
    return json.dumps(_jsonable(row), ensure_ascii=False, default=str)[:RAW_LIMIT]


def _manifest(cfg: IngestConfig, plans: list[Plan], result: IngestResult) -> dict[str, Any]:
    return {
        "command": "ingest",
        "r1v_version": __version__,
        "run_id": result.run_id,
        "config": cfg.model_dump(mode="json"),
        "inputs": [
            {
                "spec": p.source.spec,
                "name": p.source.name,
                "kind": p.source.kind,
                "preset": p.preset.name,
                "mapping": {k: list(v) for k, v in p.mapping.items()},
                "fingerprint": p.source.fingerprint,
            }
            for p in plans
        ],
        "counts": result.as_dict(),
    }
