"""The filter's sample-level rules: duplicates and benchmark contamination.

Duplicates, the earliest ingested sample of a group kept:
- exact: the same normalised question text and the same image bytes (sha256, in order);
- near: question texts whose MinHash-estimated Jaccard of word 5-grams is >= the threshold AND
  whose images match: the same number, each within `image_distance` phash bits of its
  counterpart (or both without images), found by one index over both
  (`dedup.sample_near_duplicates`), and whose reference answers agree (phash does not see the
  labels of a diagram: the same right triangle with other side lengths written on it hashes
  alike, and only the answer tells them apart). A question asked of a different picture is a
  different problem, and a different question about the same picture too;
- semantic (optional): sentence-embedding cosine >= a threshold, images and answers as above.

Contamination: `r1v_data.curation.decontam` (word n-grams and image phashes) against each benchmark spec.

`sample_drops` is what the filter runs: one streamed pass over the store (`sample_scan`) and the
checks on its compact arrays (`streamed_dedup`), in memory bounded per sample (its docstring says
how much). `load_candidates`, `find_duplicates` and `find_contamination` are the same rules on
Python lists of every sample, kept as the plain reference the streamed path is tested against.

Image phashes are computed once per sample and cached in the scores table (scorer `phash`, name
`image_phash`, the hashes as signed 64-bit integers in `detail`, the image count in `value`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from r1v_data.curation.dedup import exact_duplicates, keep_first, sample_near_duplicates
from r1v_data.curation.phash import PHASH_VERSION, hamming, phash64
from r1v_data.curation.sample_scan import BATCH, PHASH_SCORER, Scan, scan_samples
from r1v_data.curation.streamed_dedup import exact_firsts, near_duplicates
from r1v_data.store import PartWriter, Store, add_score

DROPS = pa.schema([("sample_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


@dataclass(frozen=True)
class SampleDrop:
    sample_id: str
    stage: str  # "dedup" | "decontamination"
    reason: str
    detail: str | None = None


@dataclass
class Candidates:
    """The samples under the filter, earliest ingested first (the one a duplicate group keeps)."""

    ids: list[str]
    questions: list[str]
    shas: list[list[str]]
    phashes: list[list[int]]
    answers: list[str | None]


def load_candidates(store: Store, writer: PartWriter) -> Candidates:
    sql = """SELECT sample_id, question, list_transform(images, lambda i: i.sha256) AS shas, answer
             FROM samples ORDER BY created_at, sample_id"""
    rows = list(store.stream(sql, None, batch=8192))
    phashes = image_phashes(store, writer, [r["sample_id"] for r in rows if r["shas"]])
    return Candidates(
        [r["sample_id"] for r in rows],
        [r["question"] for r in rows],
        [r["shas"] for r in rows],
        [phashes.get(r["sample_id"], []) for r in rows],
        [r["answer"] for r in rows],
    )


def image_phashes(store: Store, writer: PartWriter, ids: list[str]) -> dict[str, list[int]]:
    """Every image's phash for `ids`, from the cache or computed now (and cached)."""
    sql = """SELECT sample_id, any_value(detail) AS detail FROM scores SEMI JOIN wanted USING (sample_id)
             WHERE scorer = ? AND version = ? AND name = 'image_phash' GROUP BY sample_id"""
    out = {
        r["sample_id"]: _unpack(r["detail"]) for r in store.stream(sql, ids, [PHASH_SCORER, PHASH_VERSION])
    }
    missing = [i for i in ids if i not in out]
    images = store.stream(
        "SELECT sample_id, images FROM samples SEMI JOIN wanted USING (sample_id)", missing, batch=64
    )
    with ThreadPoolExecutor(2) as pool:  # PIL decodes outside the GIL
        for row in images:
            hashes = list(pool.map(phash64, (im["bytes"] for im in row["images"])))
            out[row["sample_id"]] = hashes
            signed = [h - (1 << 64) if h >= 1 << 63 else h for h in hashes]  # int64 in the detail
            add_score(writer, row["sample_id"], None, PHASH_SCORER, PHASH_VERSION, "image_phash",
                      float(len(hashes)), ",".join(map(str, signed)))  # fmt: skip
    return out


def _unpack(detail: str) -> list[int]:
    return [int(x) & 0xFFFF_FFFF_FFFF_FFFF for x in detail.split(",") if x]


def find_duplicates(
    c: Candidates, *, threshold: float = 0.8, image_distance: int = 4, semantic: float | None = None
) -> list[SampleDrop]:
    """Exact duplicates, then near duplicates among the rest, then (with `semantic`, a cosine
    threshold) paraphrases by sentence embeddings among what is left."""
    drops = []
    exact = exact_duplicates(c.questions, c.shas)
    for i, first in enumerate(exact):
        if first is not None:
            drops.append(
                SampleDrop(c.ids[i], "dedup", f"duplicate of {c.ids[first]} (exact: same text and images)")
            )
    live = [i for i, first in enumerate(exact) if first is None]
    found = sample_near_duplicates(
        [c.questions[i] for i in live],
        [c.phashes[i] for i in live],
        threshold=threshold,
        max_distance=image_distance,
    )
    near = [
        (live[j], live[i], score)
        for j, (i, score) in enumerate(found)
        if i is not None and _same_answer(c.answers[live[i]], c.answers[live[j]])
    ]
    drops += [SampleDrop(c.ids[j], "dedup", f"duplicate of {c.ids[i]} (near: estimated Jaccard {score:.2f}, "
                         "matching images)") for j, i, score in near]  # fmt: skip
    if semantic is not None:
        from r1v_data.curation.dedup import embed_texts, embedding_pairs

        gone = {j for j, _, _ in near}
        live = [i for i in live if i not in gone]
        pairs = embedding_pairs(embed_texts([c.questions[i] for i in live]), semantic)
        drops += [SampleDrop(c.ids[j], "dedup", f"duplicate of {c.ids[i]} (semantic: cosine {score:.3f}, "
                             "matching images)") for j, i, score in _keep_first(c, live, *pairs, image_distance)]  # fmt: skip
    return drops


def _keep_first(
    c: Candidates,
    live: list[int],
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    image_distance: int,
) -> list[tuple[int, int, float]]:
    """(dropped, kept, score) in candidate indices, from text pairs among `live` whose images and
    answers match."""
    ok = np.array([_same_images(c.phashes[live[a]], c.phashes[live[b]], image_distance)
                   and _same_answer(c.answers[live[a]], c.answers[live[b]])
                   for a, b in zip(left.tolist(), right.tolist(), strict=True)], dtype=bool)  # fmt: skip
    if len(left):
        left, right, score = left[ok], right[ok], score[ok]
    return [
        (live[j], live[i], s)
        for j, (i, s) in enumerate(keep_first(len(live), left, right, score))
        if i is not None
    ]


def _same_answer(a: str | None, b: str | None) -> bool:
    """Near-identical text and pictures with different reference answers are different problems:
    a figure whose only change is its labels (side lengths, values) hashes alike."""
    return a is None or b is None or " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _same_images(a: Sequence[int], b: Sequence[int], distance: int) -> bool:
    return len(a) == len(b) and all(hamming(x, y) <= distance for x, y in zip(a, b, strict=True))


def find_contamination(c: Candidates, benchmarks: Sequence[Any]) -> list[SampleDrop]:
    from r1v_data.curation.decontam import check_all

    hits = check_all(benchmarks, c.questions, c.phashes)
    return [
        SampleDrop(sid, "decontamination", hit.reason)
        for sid, hit in zip(c.ids, hits, strict=True)
        if hit is not None
    ]


def sample_drops(
    store: Store,
    writer: PartWriter,
    *,
    dedup: bool = True,
    threshold: float = 0.8,
    image_distance: int = 4,
    semantic: float | None = None,
    benchmarks: Sequence[Any] = (),
    batch: int = BATCH,
    spill_dir: Path | None = None,
    workers: int | None = None,
) -> pa.Table:
    """The samples to drop, as a table (sample_id, stage, reason): with `dedup`, exact, near and
    (with `semantic`, a cosine threshold) semantic duplicates, then the samples contaminated by
    one of `benchmarks` that are not duplicates already. The decisions and reasons are those of
    `find_duplicates` and `find_contamination`; `writer` caches the image phashes it computes.

    Memory is bounded per sample, not by the traces or the text: about 50 bytes a sample for the
    pass over the store, 8 more per image, and ~110 while near duplicates are sought (one LSH key
    row and its sort at a time), beside DuckDB's `sample_scan.MEMORY_LIMIT`; signatures, band keys
    and ids wait on disk under `spill_dir` (default: the system's temporary folder), ~700 bytes a
    sample. Semantic dedup alone holds its samples in memory: the question and 1.5 KB of
    embedding each, and O(n^2) dot products, so it suits tens of thousands of samples.
    `workers` processes (default: one per core for a big store) do the per-sample Python; each
    holds a batch of text and the benchmark indexes."""
    if not dedup and not benchmarks:
        return DROPS.empty_table()
    from r1v_data.curation.minhash import lsh_params

    with tempfile.TemporaryDirectory(prefix="r1v-sample-checks-", dir=spill_dir) as tmp:
        scan = scan_samples(store, writer, Path(tmp), benchmarks=benchmarks, lsh=lsh_params(threshold, 128),
                            keep_questions=dedup and semantic is not None, batch=batch, workers=workers)  # fmt: skip
        found = _streamed_duplicates(scan, threshold, image_distance, semantic) if dedup else []
        dropped = {j for j, _, _ in found}
        hits = [(j, reason) for j, reason in scan.hits if j not in dropped]
        needed = [j for j, _, _ in found] + [i for _, i, _ in found if i is not None] + [j for j, _ in hits]
        ids = {k: v[0] for k, v in scan.rows(np.array(needed, dtype=np.int64), "sample_id").items()}
    rows = [(ids[j], "dedup", why.format(ids[i])) for j, i, why in found]
    rows += [(ids[j], "decontamination", reason) for j, reason in hits]
    return pa.table([pa.array(col, pa.string()) for col in zip(*rows, strict=True)] if rows else
                    [pa.array([], pa.string())] * 3, schema=DROPS)  # fmt: skip


def _streamed_duplicates(
    scan: Scan, threshold: float, image_distance: int, semantic: float | None
) -> list[tuple[int, int, str]]:
    """(dropped, kept, reason with `{}` for the kept sample's id), exact then near then semantic."""
    first = exact_firsts(scan.digests)
    scan.digests = scan.digests[:0]  # done with: its memory goes to the near-duplicate search
    copies = np.flatnonzero(first != np.arange(scan.n))
    found = [(j, i, "duplicate of {} (exact: same text and images)") for j, i in zip(
        copies.tolist(), first[copies].tolist(), strict=True)]  # fmt: skip
    live = np.flatnonzero(first == np.arange(scan.n))
    del first
    dj, di, est = near_duplicates(
        scan, live[scan.has_words[live]], threshold=threshold, max_distance=image_distance
    )
    answers = scan.rows(np.concatenate([dj, di]), "answer")
    near = [(j, i, f"duplicate of {{}} (near: estimated Jaccard {score:.2f}, matching images)")
            for j, i, score in zip(dj.tolist(), di.tolist(), est.tolist(), strict=True)
            if _same_answer(answers[i][0], answers[j][0])]  # fmt: skip
    found += near
    if semantic is not None:
        live = np.setdiff1d(live, np.array([j for j, _, _ in near], dtype=np.int64))
        found += _streamed_semantic(scan, live, semantic, image_distance)
    return found


def _streamed_semantic(
    scan: Scan, live: np.ndarray, semantic: float, image_distance: int
) -> list[tuple[int, int, str]]:
    """`find_duplicates`'s semantic step on the samples left, held in memory (see `sample_drops`)."""
    from r1v_data.curation.dedup import embed_texts, embedding_pairs

    rows = scan.rows(live, "sample_id, answer, question")
    order = live.tolist()
    hashes = [scan.flat[scan.offsets[k] : scan.offsets[k] + scan.counts[k]].tolist() for k in order]
    c = Candidates([rows[k][0] for k in order], [rows[k][2] for k in order], [[] for _ in order], hashes,
                   [rows[k][1] for k in order])  # fmt: skip
    local = list(range(len(order)))
    pairs = embedding_pairs(embed_texts(c.questions), semantic)
    return [(order[j], order[i], f"duplicate of {{}} (semantic: cosine {score:.3f}, matching images)")
            for j, i, score in _keep_first(c, local, *pairs, image_distance)]  # fmt: skip
