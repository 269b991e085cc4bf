"""`run_ingest`: read sources, turn rows into samples, and store each problem once.

Identity is content: the same problem ingested twice, or from two sources, is one sample with
one provenance row per occurrence. A row that cannot become a sample goes to the quarantine
with its reason and location; only a source that cannot be opened stops the command, and then
before anything is written.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from r1v_data import __version__
from r1v_data.config import IngestConfig
from r1v_data.errors import ConfigError, Interrupted
from r1v_data.readers.images import ImageLimits
from r1v_data.readers.presets import resolve
from r1v_data.readers.samples import Prepared, RowPlan, prepare, quarantine_row
from r1v_data.readers.sources import Record, Source, open_source
from r1v_data.store import PartWriter, Store, utcnow

Progress = Callable[[str, int, int | None], None]  # (source name, rows done, total or None)
WINDOW = 64  # rows decoded ahead per worker thread; progress is reported every WINDOW rows


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
        totals = {k: self.total(k) for k in ("read", "added", "new_provenance", "unchanged", "quarantined")}
        return {
            "run_id": self.run_id,
            "store": str(self.store),
            **totals,
            "quarantine_reasons": dict(self.quarantine_reasons()),
            "sources": [s.as_dict() for s in self.sources],
        }


@dataclass
class Plan:
    """A source opened and understood, before anything is written."""

    source: Source
    rows: RowPlan


@dataclass
class Writers:
    samples: PartWriter
    provenance: PartWriter
    quarantine: PartWriter


def run_ingest(cfg: IngestConfig, progress: Progress | None = None) -> IngestResult:
    if cfg.name and len(cfg.sources) > 1:
        raise ConfigError("--name names one source; ingest several sources in separate commands")
    plans = [_plan(spec, cfg) for spec in cfg.sources]  # fail here, before writing anything
    _disambiguate_names(plans)
    with Store.open(cfg.store, write=True, create=True) as store:
        run_id = store.begin_run("ingest")
        known = _Known.load(store)
        results: list[SourceCounts] = []
        status = "failed"
        try:
            samples = store.writer("samples", run_id, flush_rows=256)
            # provenance and quarantine rows point at samples: samples reach disk first
            provenance = store.writer("provenance", run_id, flush_rows=4096, after=(samples,))
            quarantine = store.writer("quarantine", run_id, flush_rows=1024)
            with samples, provenance, quarantine, ThreadPoolExecutor(cfg.workers) as pool:
                writers = Writers(samples, provenance, quarantine)
                for plan in plans:
                    counts = SourceCounts(plan.source.name, plan.source.spec, plan.rows.preset.name)
                    results.append(counts)
                    _ingest_source(plan, cfg, pool, known, writers, run_id, counts, progress)
            status = "ok"
        except KeyboardInterrupt as exc:
            status = "interrupted"
            added = IngestResult(run_id, store.root, results).total("added")
            raise Interrupted(f"ingest run {run_id} saved {added} new samples") from exc
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
    limits = ImageLimits(cfg.max_pixels, cfg.max_image_bytes, cfg.allow_remote_images, cfg.image_timeout_s)
    return Plan(source, RowPlan(preset, mapping, root / preset.image_dir, root, limits, cfg.require_question))


def _disambiguate_names(plans: list[Plan]) -> None:
    # a/test.jsonl and b/test.jsonl in one command: name them a/test and b/test
    names = Counter(p.source.name for p in plans)
    for plan in plans:
        if names[plan.source.name] > 1 and plan.source.uri.startswith("/"):
            plan.source.name = f"{Path(plan.source.uri).parent.name}/{plan.source.name}"


class _Known:
    """What the store holds already, so a re-run adds nothing it has."""

    def __init__(self, samples: set[str], provenance: set[tuple[Any, ...]], quarantine: set[str]):
        self.samples, self.provenance, self.quarantine = samples, provenance, quarantine

    @classmethod
    def load(cls, store: Store) -> _Known:
        con = store.connect()
        try:
            samples = {r[0] for r in con.sql("SELECT sample_id FROM samples").fetchall()}
            # Only provenance whose sample is stored counts: after a crash between the two
            # writes, the sample is added again rather than lost.
            prov = set(
                con.sql("""SELECT sample_id, coalesce(source_path, source), location, answer
                                  FROM provenance SEMI JOIN samples USING (sample_id)""").fetchall()
            )
            quarantine = {r[0] for r in con.sql("SELECT quarantine_id FROM quarantine").fetchall()}
        finally:
            con.close()
        return cls(samples, prov, quarantine)


def _ingest_source(
    plan: Plan,
    cfg: IngestConfig,
    pool: ThreadPoolExecutor,
    known: _Known,
    writers: Writers,
    run_id: str,
    counts: SourceCounts,
    progress: Progress | None,
) -> None:
    records: Iterator[Record] = plan.source.records()
    total = plan.source.total
    if cfg.limit:
        records = islice(records, cfg.limit)
        total = min(total, cfg.limit) if total is not None else None
    if progress:
        progress(plan.source.name, 0, total)
    for prep in _prepared_in_order(records, plan.rows, pool, window=WINDOW * cfg.workers):
        _store_one(prep, plan.source, known, writers, run_id, counts)
        if progress and counts.read % WINDOW == 0:
            progress(plan.source.name, counts.read, total)
    if progress:
        progress(plan.source.name, counts.read, total)


def _prepared_in_order(
    records: Iterator[Record], rows: RowPlan, pool: ThreadPoolExecutor, window: int
) -> Iterator[Prepared]:
    """Prepare rows on the pool, `window` ahead of the consumer, yielding in source order, so
    writing parts (on this thread) overlaps with decoding images (on the pool)."""
    pending: deque[Future[Prepared]] = deque()
    for record in records:
        pending.append(pool.submit(prepare, record, rows))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _store_one(
    prep: Prepared,
    source: Source,
    known: _Known,
    writers: Writers,
    run_id: str,
    counts: SourceCounts,
) -> None:
    counts.read += 1
    now = utcnow()
    if prep.sample is None:
        reason = prep.reason or "unknown"
        counts.quarantined[reason] += 1
        row = quarantine_row(source.name, source.uri, prep.location, reason, prep.detail, prep.raw, run_id)
        if row["quarantine_id"] not in known.quarantine:
            known.quarantine.add(row["quarantine_id"])
            writers.quarantine.add(row)
        return
    sample = prep.sample
    sid = sample["sample_id"]
    key = (sid, source.uri, prep.location, sample["answer"])
    if key in known.provenance:
        counts.unchanged += 1
        return
    known.provenance.add(key)
    writers.provenance.add(
        {
            "sample_id": sid,
            "source": source.name,
            "source_path": source.uri,
            "source_id": sample["source_id"],
            "location": prep.location,
            "answer": sample["answer"],
            "run_id": run_id,
            "created_at": now,
        }
    )
    if sid in known.samples:
        counts.new_provenance += 1
        return
    known.samples.add(sid)
    counts.added += 1
    writers.samples.add(
        {**sample, "source": source.name, "run_id": run_id, "created_at": now},
        size_hint=prep.image_bytes,
    )


def _manifest(cfg: IngestConfig, plans: list[Plan], result: IngestResult) -> dict[str, Any]:
    inputs = [
        {
            "spec": p.source.spec,
            "name": p.source.name,
            "uri": p.source.uri,
            "kind": p.source.kind,
            "preset": p.rows.preset.name,
            "mapping": {k: list(v) for k, v in p.rows.mapping.items()},
            "fingerprint": p.source.fingerprint,
        }
        for p in plans
    ]
    return {
        "command": "ingest",
        "r1v_version": __version__,
        "run_id": result.run_id,
        "config": cfg.model_dump(mode="json"),
        "inputs": inputs,
        "counts": result.as_dict(),
    }
