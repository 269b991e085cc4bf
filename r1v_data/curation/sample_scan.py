"""One ordered pass over the store's samples for the sample checks, in bounded memory.

The samples stream from DuckDB, earliest ingested first (`ORDER BY created_at, sample_id`; DuckDB
sorts out of core under `MEMORY_LIMIT`, spilling to the scan's folder), a batch at a time. Each
batch leaves behind only what the checks need later:

- in memory, per sample: the exact-dedup digest (16 bytes), whether the text has words (1), the
  image count and the offset of its first phash (8 + 8), and 8 bytes per image (its phash);
- on disk, in the scan's folder: the MinHash signature (`num_perm` x 4 bytes, `sig.u32`), one LSH
  band key per band (8 bytes each, `band_<t>.u64`: a band is read back alone), and the sample id
  and reference answer (`rows.parquet`, with the question when semantic dedup needs it again);
- decontamination hits, checked batch by batch against the (small, in-memory) benchmark indexes.

Image phashes not cached in the scores table yet are computed first, in their own pass, cached
through the writer and kept in `phash.parquet` for the ordered pass to join.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data.curation.minhash import EMPTY
from r1v_data.curation.phash import PHASH_VERSION
from r1v_data.curation.scan_work import Settings, TextResult, Workers, phash_work, text_work, worker_count
from r1v_data.store import PartWriter, Store, add_score
from r1v_data.store.sandbox import sql_str

PHASH_SCORER = "phash"
MEMORY_LIMIT = "256MB"  # DuckDB's buffers for the sort and the joins; beyond it they spill to disk
BATCH = 8192  # samples per batch: numpy-sized, and a few MB of text
_PHASH_BATCH = 256  # samples whose images are hashed in one task

_CACHED = """SELECT sample_id, any_value(detail) AS detail FROM scores
             WHERE scorer = $scorer AND version = $version AND name = 'image_phash' GROUP BY sample_id"""
_UNCACHED = f"""SELECT s.sample_id, s.images FROM samples s ANTI JOIN ({_CACHED}) c USING (sample_id)
                WHERE len(s.images) > 0"""
_ORDERED = """SELECT s.sample_id, s.question, s.answer, list_transform(s.images, lambda i: i.sha256) AS shas,
                     CASE WHEN len(s.images) > 0 THEN p.detail END AS detail
              FROM samples s LEFT JOIN ({phashes}) p USING (sample_id) ORDER BY s.created_at, s.sample_id"""
_ROWS = pa.schema(
    [("idx", pa.int64()), ("sample_id", pa.string()), ("answer", pa.string()), ("question", pa.string())]
)


@dataclass
class Scan:
    """What one pass over `n` samples left: compact arrays in memory, the rest in `folder`."""

    folder: Path
    n: int
    bands: int
    num_perm: int
    digests: np.ndarray  # (n, 2) uint64, `dedup.exact_digest`
    has_words: np.ndarray  # (n,) bool
    counts: np.ndarray  # (n,) intp, images per sample
    offsets: np.ndarray  # (n,) intp, where a sample's phashes start in `flat`
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    hits: list[tuple[int, str]] = field(default_factory=list)  # (index, contamination reason)

    def band(self, t: int) -> np.ndarray:
        return np.fromfile(self.folder / f"band_{t}.u64", dtype=np.uint64)

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of `rows` (sample indices), read one by one from disk: candidates are few."""
        size = 4 * self.num_perm
        fd = os.open(self.folder / "sig.u32", os.O_RDONLY)
        try:
            data = b"".join(os.pread(fd, size, int(i) * size) for i in rows.tolist())
        finally:
            os.close(fd)
        return np.frombuffer(data, dtype=np.uint32).reshape(len(rows), self.num_perm)

    def rows(self, indices: np.ndarray, columns: str = "sample_id, answer") -> dict[int, tuple[Any, ...]]:
        """index -> (columns...) for the samples at `indices`, from rows.parquet."""
        import duckdb

        con = duckdb.connect()
        try:
            con.register("wanted", pa.table({"idx": pa.array(np.unique(indices), pa.int64())}))
            path = sql_str(self.folder / "rows.parquet")
            sql = (
                f"SELECT idx, {columns} FROM read_parquet('{path}') SEMI JOIN wanted USING (idx) ORDER BY idx"
            )
            return {r[0]: r[1:] for r in con.sql(sql).fetchall()}
        finally:
            con.close()


def scan_samples(
    store: Store,
    writer: PartWriter,
    folder: Path,
    *,
    benchmarks: Sequence[Any] = (),
    lsh: tuple[int, int] = (21, 6),
    num_perm: int = 128,
    keep_questions: bool = False,
    batch: int = BATCH,
    workers: int | None = None,
) -> Scan:
    """Stream every sample once (see the module docstring); `lsh` is (bands, rows per band).
    `workers` processes do the per-sample Python (default: `scan_work.worker_count`)."""
    con = _connect(store, folder)
    try:
        n = con.sql("SELECT count(*) FROM samples").fetchall()[0][0]
        pool = Workers(
            Settings(benchmarks, lsh, num_perm), worker_count(n, batch) if workers is None else workers
        )
        try:
            phashes = _cache_phashes(con, writer, folder, pool)
            scan = Scan(folder, n, lsh[0], num_perm, np.zeros((n, 2), dtype=np.uint64), np.zeros(n, dtype=bool),
                        np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.intp))  # fmt: skip
            params = {"scorer": PHASH_SCORER, "version": PHASH_VERSION}
            reader = con.sql(_ORDERED.format(phashes=phashes), params=params).to_arrow_reader(batch)
            _consume(scan, reader, pool, keep_questions)
        finally:
            pool.close()
    finally:
        con.close()
    return scan


def _connect(store: Store, folder: Path) -> Any:
    con = store.connect()
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{sql_str(folder / 'duckdb')}'")
    return con


def _consume(scan: Scan, reader: Iterator[pa.RecordBatch], pool: Workers, keep_questions: bool) -> None:
    flat: list[np.ndarray] = []
    with ExitStack() as files:
        sig_file = files.enter_context(open(scan.folder / "sig.u32", "wb"))
        bands = [files.enter_context(open(scan.folder / f"band_{t}.u64", "wb")) for t in range(scan.bands)]
        rows = files.enter_context(pq.ParquetWriter(scan.folder / "rows.parquet", _ROWS))
        start = 0
        for b, text in _with_text_work(reader, pool):
            stop = start + len(b["sample_id"])
            scan.digests[start:stop] = text.digests
            sig_file.write(text.signatures.tobytes())
            scan.has_words[start:stop] = text.signatures[:, 0] != EMPTY
            for band, keys in zip(bands, text.keys, strict=True):
                band.write(keys.tobytes())
            _take_images(scan, start, b["hashes"], flat)
            scan.hits += [(start + i, reason) for i, reason in text.hits]
            rows.write_table(_rows_table(start, b, keep_questions))
            start = stop
    scan.flat = np.concatenate(flat) if flat else scan.flat


def _with_text_work(
    reader: Iterator[pa.RecordBatch], pool: Workers
) -> Iterator[tuple[dict[str, Any], TextResult]]:
    """Each batch as columns (with its images' phashes unpacked), beside its `text_work`."""
    held: list[dict[str, Any]] = []  # the batches sent to the pool and not back yet

    def tasks() -> Iterator[tuple[Any, ...]]:
        for rb in reader:
            b = rb.to_pydict()
            b["hashes"] = [_unpack(d) if d else [] for d in b["detail"]]
            held.append(b)
            yield b["question"], b["shas"], b["hashes"]

    for text in pool.map(text_work, tasks()):
        yield held.pop(0), text


def _take_images(scan: Scan, start: int, hashes: list[list[int]], flat: list[np.ndarray]) -> None:
    """The batch's image counts and phashes into the scan."""
    counts = np.array([len(h) for h in hashes], dtype=np.intp)
    held = sum(len(f) for f in flat)
    scan.counts[start : start + len(hashes)] = counts
    scan.offsets[start : start + len(hashes)] = held + np.cumsum(counts) - counts
    flat.append(np.array([x for h in hashes for x in h], dtype=np.uint64))


def _rows_table(start: int, b: dict[str, list[Any]], keep_questions: bool) -> pa.Table:
    n = len(b["sample_id"])
    return pa.table({"idx": np.arange(start, start + n, dtype=np.int64), "sample_id": b["sample_id"], "answer": b["answer"],
                     "question": b["question"] if keep_questions else pa.nulls(n, pa.string())}, schema=_ROWS)  # fmt: skip


def _cache_phashes(con: Any, writer: PartWriter, folder: Path, pool: Workers) -> str:
    """Hash the images no earlier run cached; the SQL of every sample's phashes, cached or new."""
    params = {"scorer": PHASH_SCORER, "version": PHASH_VERSION}
    new = folder / "phash.parquet"
    schema = pa.schema([("sample_id", pa.string()), ("detail", pa.string())])
    held: list[list[str]] = []  # the ids of the batches sent to the pool and not back yet

    def tasks() -> Iterator[tuple[list[list[bytes]]]]:
        for rb in con.sql(_UNCACHED, params=params).to_arrow_reader(_PHASH_BATCH):
            held.append(rb.column(0).to_pylist())
            yield ([[im["bytes"] for im in images] for images in rb.column(1).to_pylist()],)

    with pq.ParquetWriter(new, schema) as out:
        for hashes in pool.map(phash_work, tasks()):
            ids = held.pop(0)
            details = [_cached(writer, sid, h) for sid, h in zip(ids, hashes, strict=True)]
            out.write_table(pa.table({"sample_id": ids, "detail": details}, schema=schema))
    # one row a sample: the writer may have flushed some new hashes to `scores` already, and the
    # view of the scan's connection would then hold them twice (a sample joined twice)
    both = f"{_CACHED} UNION ALL SELECT sample_id, detail FROM read_parquet('{sql_str(new)}')"
    return f"SELECT sample_id, any_value(detail) AS detail FROM ({both}) GROUP BY sample_id"


def _cached(writer: PartWriter, sample_id: str, hashes: list[int]) -> str:
    """Caches a sample's image phashes through `writer`; the detail they are cached as."""
    signed = [h - (1 << 64) if h >= 1 << 63 else h for h in hashes]  # int64 in the detail
    detail = ",".join(map(str, signed))
    add_score(writer, sample_id, None, PHASH_SCORER, PHASH_VERSION, "image_phash", float(len(hashes)), detail)
    return detail


def _unpack(detail: str) -> list[int]:
    return [int(x) & 0xFFFF_FFFF_FFFF_FFFF for x in detail.split(",") if x]
