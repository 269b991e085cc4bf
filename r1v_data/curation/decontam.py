"""Benchmark decontamination: find training problems that overlap an evaluation set.

A benchmark is anything `open_source` reads, mapped to questions and images by the ingest
presets and `prepare`, so it is read exactly as ingest would read it. A candidate is
contaminated by either test:

- text: it shares at least `min_ngrams` (default 1) distinct word n-grams (n=13 by default, the
  GPT-3 rule) with one benchmark question, and at least `min_fraction` (default 0) of that
  question's n-grams. Under n words there is no n-gram, so a short question matches only on
  its whole normalised text: a short copy with a sentence added or a word changed is missed by
  text (its image usually is not). Stock phrasing ("m/n, where m and n are relatively prime
  positive integers. Find m+n") spans 13 words and makes AIME, AMC and MATH problems match
  each other under the default rule; `min_fraction=0.1` removes that (see the tests).
- images: a `phash64` within Hamming distance `max_distance` of a benchmark image.

Normalised text: NFKC, lowercase, without `<imageN>` placeholders, rendered `Choices:` blocks
(reordered options are the same problem) and `[asy]` code; formatting LaTeX (`\\frac`,
`\\left`, `\\le`...) dropped, other commands kept as words (`\\pi` -> `pi`), `1,000` -> `1000`;
then runs of letters and numbers are the words, everything else is a space.

Spec: `SOURCE[#key=value&...]`: SOURCE is a file, a folder or `hf:ORG/NAME`; keys `name` (in
drop reasons; default the file stem), `split`, `preset`, or a sample field mapped to columns
(`question=problem`, `images=image_1,image_2`), e.g. `hf:HuggingFaceH4/MATH-500#split=test`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np

from r1v_data.errors import ConfigError, SourceError
from r1v_data.images import ImageLimits
from r1v_data.phash import PHASH_VERSION, phash64
from r1v_data.presets import FIELDS, resolve
from r1v_data.samples import RowPlan, prepare
from r1v_data.sources import open_source

DEFAULT_NGRAM = 13
# Calibrated on MATH-Vision testmini (304 images; phash distances are always even): re-encoding
# as PNG or JPEG q30, resizing to 50% or 30%, and Gaussian blur r=1..2 stay within 6 bits for
# 301-304 of 304 images (within 4 bits: 296-303), while of the 46,056 pairs of distinct images
# one is at distance 6 (two different figures on the same MATH-V layout template) and none
# closer; the 28 other images in ../shared/data are 12 or more bits from every MATH-V image.
DEFAULT_MAX_DISTANCE = 6
BATCH = 8192  # candidates hashed together: large enough for numpy, small enough for memory
EVIDENCE_CHARS = 160

ImageLike = bytes | int | Mapping[str, Any]  # encoded bytes, a phash64, or a stored image struct

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial n-gram hash (mod 2**64)
_CHOICES = re.compile(r"\n\s*choices:\s*\n.*\Z", re.DOTALL)  # text.render_question's options block
_ASY = re.compile(r"\[asy\].*?(?:\[/asy\]|\Z)", re.DOTALL)  # Asymptote drawing code, not text
_PLACEHOLDER = re.compile(r"<\s*(?:image|img)[\s_-]*\d+\s*>")
# 1,000 / 1{,}000 -> 1000; no lookbehind for the digit before: a comma is a word break anyway
_THOUSANDS = re.compile(r"(?:,|\{,\})(?=\d{3}(?!\d))")
_FORMATTING = (
    "frac|dfrac|tfrac|cfrac|left|right|big|bigg|cdot|times|text|textbf|textit|mathrm|mathbf|mathit|"
    "mathbb|operatorname|displaystyle|quad|qquad|overline|underline|hspace|vspace|begin|end|boxed|"
    "mbox|hbox|limits|nolimits|dots|ldots|cdots|"
    # relations and operators: their ASCII forms (<, =, +) are punctuation and dropped too
    "le|leq|leqslant|ge|geq|geqslant|lt|gt|ne|neq|pm|mp|div|approx|equiv|sim|cong|to|rightarrow"
)
_LATEX = re.compile(rf"\\(?:(?:{_FORMATTING})(?![a-z])|[^a-z])")
_CJK = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af"  # scripts written without spaces: a word per char
_WORD = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d+(?:\.\d+)?")
_ASCII_WORD = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)?")  # the same tokens for ASCII text, twice as fast


def words(text: str) -> list[str]:
    """The normalised words of a question, as the n-gram test sees them."""
    s = unicodedata.normalize("NFKC", text).lower()
    # each rule runs only when its trigger is present: this function bounds checks per second
    if "choices:" in s:
        s = _CHOICES.sub("", s)
    if "[asy]" in s:
        s = _ASY.sub(" ", s)
    if "<" in s:
        s = _PLACEHOLDER.sub(" ", s)
    if "," in s:
        s = _THOUSANDS.sub("", s)
    if "\\" in s:
        s = _LATEX.sub(" ", s)
    return (_ASCII_WORD if s.isascii() else _WORD).findall(s)


@dataclass(frozen=True)
class Hit:
    """Why one candidate is contaminated; `reason` is the drop reason a filter records."""

    benchmark: str
    item: str  # the benchmark row: its id column, else its location in the source
    kind: str  # "ngram", "text" (whole short text) or "image"
    evidence: str  # the shared n-gram or text, or the phash distance
    count: int  # distinct shared n-grams (kind "ngram"), else 1
    reason: str


@dataclass(frozen=True)
class Spec:
    source: str
    name: str | None = None
    split: str | None = None
    preset: str | None = None
    mapping: dict[str, list[str]] = field(default_factory=dict)


def parse_spec(spec: str) -> Spec:
    """`SOURCE#name=x&split=test&question=problem` -> Spec (a path containing `#` is taken whole)."""
    source, sep, options = spec.partition("#")
    if not sep or Path(spec).exists():
        return Spec(spec)
    kwargs: dict[str, Any] = {"mapping": {}}
    for part in filter(None, options.split("&")):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not value:
            raise ConfigError(f"benchmark {spec!r}: option {part!r} is not KEY=VALUE")
        if key in ("name", "split", "preset"):
            kwargs[key] = value
        elif key in FIELDS:
            kwargs["mapping"][key] = [c.strip() for c in value.split(",") if c.strip()]
        else:
            raise ConfigError(
                f"benchmark {spec!r}: unknown option {key!r} (name, split, preset, or a field: "
                f"{', '.join(FIELDS)})"
            )
    return Spec(source, **kwargs)


@dataclass
class _Words:
    """Normalised questions with their words numbered once, so that each benchmark maps the
    distinct words of a batch to its own vocabulary instead of looking up every word again."""

    docs: list[list[str]]
    distinct: list[str]
    ids: np.ndarray  # index into `distinct` of every word, all documents concatenated
    lengths: np.ndarray

    @classmethod
    def of(cls, docs: list[list[str]]) -> _Words:
        seen: dict[str, int] = {}
        flat = chain.from_iterable(docs)
        ids = np.fromiter((seen.setdefault(w, len(seen)) for w in flat), dtype=np.int64)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        return cls(docs, list(seen), ids, lengths)


class _TextIndex:
    """Sorted n-gram hashes -> benchmark item, plus whole texts of items shorter than n words."""

    def __init__(self, docs: list[list[str]], n: int):
        self.n = n
        batch = _Words.of(docs)
        self.vocab = {w: i for i, w in enumerate(batch.distinct, start=1)}
        # Random word values (seeded: the same benchmark gives the same index); 0 marks a word the
        # benchmark never uses, and an n-gram holding one cannot match, so it is never looked up.
        rng = np.random.default_rng(0x5EED)
        self.values = rng.integers(1, 2**64 - 1, size=len(self.vocab) + 1, dtype=np.uint64, endpoint=True)
        self.values[0] = 0
        hashes, doc, _ = self._ngrams(batch)
        pairs = np.unique(np.stack([hashes, doc.astype(np.uint64)], axis=1), axis=0)  # (n-gram, item)
        self.hashes, first = np.unique(pairs[:, 0], return_index=True)
        # An n-gram in several items is credited to the first. That is rare apart from stock
        # phrasing ("m and n are relatively prime positive integers. Find m+n"), which identifies
        # no item anyway; `min_fraction` is the knob against such phrases.
        self.items = pairs[first, 1].astype(np.int64)
        self.totals = np.bincount(pairs[:, 1].astype(np.int64), minlength=len(docs))  # distinct, per item
        self.short: dict[str, int] = {}  # whole text of an item under n words -> item
        for i, d in enumerate(docs):
            if 0 < len(d) < n:
                self.short.setdefault(" ".join(d), i)

    def _ngrams(self, batch: _Words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        get = self.vocab.get
        lut = np.fromiter((get(w, 0) for w in batch.distinct), dtype=np.int64, count=len(batch.distinct))
        return _ngram_hashes(lut[batch.ids], batch.lengths, self.n, self.values)

    def matches(self, batch: _Words) -> dict[int, tuple[int, int, int]]:
        """Candidate index -> (benchmark item, shared n-grams, start of the first shared one)."""
        out: dict[int, tuple[int, int, int]] = {}
        for i, d in enumerate(batch.docs):
            if 0 < len(d) < self.n and (item := self.short.get(" ".join(d))) is not None:
                out[i] = (item, 0, 0)
        if not len(self.hashes):
            return out
        hashes, doc, pos = self._ngrams(batch)
        slot = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        found = self.hashes[slot] == hashes
        doc, pos, slot = doc[found], pos[found], slot[found]
        if not len(doc):
            return out
        # distinct benchmark n-grams per (candidate, item): a phrase the candidate repeats counts
        # once. Windows come in text order, and stay so: the evidence is the earliest shared n-gram.
        first = np.sort(np.unique(doc * len(self.hashes) + slot, return_index=True)[1])
        doc, pos, item = doc[first], pos[first], self.items[slot[first]]
        size = len(self.totals)
        pairs, first, counts = np.unique(doc * size + item, return_index=True, return_counts=True)
        for pair, f, c in zip(pairs.tolist(), first.tolist(), counts.tolist(), strict=True):
            cand, it = divmod(pair, size)
            if cand not in out or c > out[cand][1]:  # the item sharing most n-grams is the evidence
                out[cand] = (it, c, int(pos[f]))
        return out


def _ngram_hashes(
    ids: np.ndarray, lengths: np.ndarray, n: int, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash of every n-gram made only of known words (id != 0), with its document and start."""
    m = len(ids) - n + 1
    if m <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, empty
    vals = values[ids]
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):  # polynomial hash of all windows at once; uint64 arithmetic wraps
        h *= _P
        h += vals[j : j + m]
    doc = np.repeat(np.arange(len(lengths)), lengths)
    unknown = np.concatenate([[0], np.cumsum(ids == 0)])
    ok = (doc[:m] == doc[n - 1 :]) & (unknown[n:] == unknown[:m])
    start = np.arange(m) - (np.cumsum(lengths) - lengths)[doc[:m]]
    return h[ok], doc[:m][ok], start[ok]


class _ImageIndex:
    """Pigeonhole index: split the 64 bits into k+1 blocks; two hashes within distance k agree
    exactly on at least one block, so only images sharing a block value are compared."""

    def __init__(self, hashes: list[int], k: int):
        self.k = k
        self.hashes = np.array(hashes, dtype=np.uint64)
        nblocks = min(k + 1, 64)
        edges = [round(64 * i / nblocks) for i in range(nblocks + 1)]
        self.blocks = [(lo, (1 << (hi - lo)) - 1) for lo, hi in pairwise(edges)]
        self.tables: list[dict[int, np.ndarray]] = []
        for shift, mask in self.blocks:
            table: dict[int, list[int]] = defaultdict(list)
            for i, h in enumerate(hashes):
                table[(h >> shift) & mask].append(i)
            self.tables.append({key: np.array(v, dtype=np.int64) for key, v in table.items()})

    def nearest(self, h: int) -> tuple[int, int] | None:
        """(distance, benchmark image index) of the closest image within k bits, if any."""
        found = [
            t[key]
            for (shift, mask), t in zip(self.blocks, self.tables, strict=True)
            if (key := (h >> shift) & mask) in t
        ]
        if not found:
            return None
        candidates = np.concatenate(found)
        dist = np.bitwise_count(self.hashes[candidates] ^ np.uint64(h))
        best = np.lexsort((candidates, dist))[0]  # nearest; among equals the first indexed
        return (int(dist[best]), int(candidates[best])) if dist[best] <= self.k else None


@dataclass
class Benchmark:
    """One benchmark's indexes; build with `load_benchmark`."""

    spec: str
    name: str
    uri: str
    items: list[str]  # item labels, by index
    text: _TextIndex = field(repr=False)
    image_items: list[int] = field(repr=False)  # benchmark image index -> item index
    images: _ImageIndex = field(repr=False)
    min_ngrams: int = 1
    min_fraction: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)  # rows not indexed, by reason
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the index holds, for manifests and summaries."""
        return {
            "spec": self.spec,
            "name": self.name,
            "uri": self.uri,
            "items": len(self.items),
            "ngram": self.text.n,
            "ngrams": len(self.text.hashes),
            "short_texts": len(self.text.short),
            "images": len(self.image_items),
            "phash": PHASH_VERSION,
            "max_distance": self.images.k,
            "min_ngrams": self.min_ngrams,
            "min_fraction": self.min_fraction,
            "skipped": dict(self.skipped),
            "fingerprint": self.fingerprint,
        }

    def check(self, question: str, images: Sequence[ImageLike] = ()) -> Hit | None:
        """The evidence that one candidate overlaps this benchmark, or None."""
        return self.check_batch([question], [images])[0]

    def check_batch(
        self, questions: Sequence[str], images: Sequence[Sequence[ImageLike]] | None = None
    ) -> list[Hit | None]:
        """`check` for many candidates; text is hashed `BATCH` candidates at a time with numpy."""
        return check_all([self], questions, images)

    def _text_hit(self, doc: list[str], item: int, count: int, start: int) -> Hit | None:
        n = self.text.n
        if count == 0:  # whole short text
            evidence = " ".join(doc)[:EVIDENCE_CHARS]
            reason = f'contamination: same normalised text as {self.name}:{self.items[item]} ("{evidence}")'
            return Hit(self.name, self.items[item], "text", evidence, 1, reason)
        total = int(self.text.totals[item])
        if count < self.min_ngrams or count < self.min_fraction * total:
            return None
        evidence = " ".join(doc[start : start + n])[:EVIDENCE_CHARS]
        reason = (
            f"contamination: {n}-gram overlap with {self.name}:{self.items[item]} "
            f'({count} of its {total} {n}-grams; "{evidence}")'
        )
        return Hit(self.name, self.items[item], "ngram", evidence, count, reason)

    def _image_hit(self, images: Sequence[ImageLike]) -> Hit | None:
        for h in map(image_phash, images):
            if (near := self.images.nearest(h)) is not None:
                dist, idx = near
                label = self.items[self.image_items[idx]]
                reason = f"contamination: image phash distance {dist} to {self.name}:{label}"
                return Hit(self.name, label, "image", str(dist), 1, reason)
        return None


def image_phash(image: ImageLike) -> int:
    """phash64 of encoded bytes or of a stored image struct; an int is taken as a phash already
    (hashing is ~3 ms an image on one core, so callers with many may hash them in processes).
    Bytes that PIL cannot decode raise PIL's error: stored images were checked at ingest."""
    if isinstance(image, int):
        return image & 0xFFFF_FFFF_FFFF_FFFF  # a phash stored as a signed int64 column
    data = image["bytes"] if isinstance(image, Mapping) else image
    return phash64(bytes(data))


def load_benchmark(
    spec: str,
    *,
    ngram: int = DEFAULT_NGRAM,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    min_ngrams: int = 1,
    min_fraction: float = 0.0,
) -> Benchmark:
    """Read a benchmark named by `spec` (see the module docstring) and index it.

    Raises SourceError when it cannot be read or holds no usable row, ConfigError for a bad
    spec or setting. Rows `prepare` rejects (no question, a missing image) are counted in
    `Benchmark.skipped`, not indexed.
    """
    if ngram < 1 or not 0 <= max_distance < 32 or min_ngrams < 1 or not 0 <= min_fraction <= 1:
        raise ConfigError(
            f"decontamination settings out of range: ngram={ngram} (>= 1), max_distance={max_distance} "
            f"(0..31), min_ngrams={min_ngrams} (>= 1), min_fraction={min_fraction} (0..1)"
        )
    opts = parse_spec(spec)
    try:
        source = open_source(opts.source, split=opts.split)
        columns, first = source.peek_columns()
        preset, mapping = resolve(opts.preset, opts.mapping, columns, first)
    except SourceError as exc:
        raise SourceError(f"benchmark {spec!r}: {exc}") from exc
    except ConfigError as exc:  # preset detection failed; its hint names ingest's flags
        raise ConfigError(
            f"benchmark {spec!r}: {exc}; in a benchmark spec write {opts.source}#preset=NAME "
            "or #question=COLUMN"
        ) from exc
    root = source.base_dir
    plan = RowPlan(preset, mapping, root / preset.image_dir, root, ImageLimits())
    items: list[str] = []
    docs: list[list[str]] = []
    image_hashes: list[int] = []
    image_items: list[int] = []
    skipped: Counter[str] = Counter()
    for record in source.records():
        prep = prepare(record, plan)
        if prep.sample is None:
            skipped[prep.reason or "unknown"] += 1
            continue
        for image in prep.sample["images"]:
            image_hashes.append(phash64(image["bytes"]))
            image_items.append(len(items))
        items.append(prep.sample["source_id"] or prep.location)
        docs.append(words(prep.sample["question"]))
    if not items:
        shown = f" (skipped: {dict(skipped)})" if skipped else ""
        raise SourceError(f"benchmark {spec!r} has no usable rows{shown}; check the file or its #preset")
    return Benchmark(
        spec=spec,
        name=opts.name or source.name,
        uri=source.uri,
        items=items,
        text=_TextIndex(docs, ngram),
        image_items=image_items,
        images=_ImageIndex(image_hashes, max_distance),
        min_ngrams=min_ngrams,
        min_fraction=min_fraction,
        skipped=skipped,
        fingerprint=source.fingerprint,
    )


def check_all(
    benchmarks: Sequence[Benchmark],
    questions: Sequence[str],
    images: Sequence[Sequence[ImageLike] | None] | None = None,
) -> list[Hit | None]:
    """The first hit per candidate across several benchmarks, tried in the order given (text,
    then images, per benchmark). Each question is normalised once and each image hashed at most
    once, however many benchmarks there are."""
    out: list[Hit | None] = []
    for lo in range(0, len(questions), BATCH):
        batch = _Words.of([words(q) for q in questions[lo : lo + BATCH]])
        out.extend(_check_chunk(benchmarks, batch, images[lo : lo + BATCH] if images is not None else None))
    return out


def _check_chunk(
    benchmarks: Sequence[Benchmark],
    batch: _Words,
    images: Sequence[Sequence[ImageLike] | None] | None,
) -> list[Hit | None]:
    hits: list[Hit | None] = [None] * len(batch.docs)
    hashed: dict[int, list[int]] = {}  # only candidates that reach the image test are hashed
    for bench in benchmarks:
        # the whole batch goes to every benchmark: hits are rare, so leaving them out saves nothing
        text = bench.text.matches(batch)
        for i, doc in enumerate(batch.docs):
            if hits[i] is not None:
                continue
            if i in text:
                hits[i] = bench._text_hit(doc, *text[i])
            if hits[i] is None and images is not None and images[i] and bench.image_items:
                if i not in hashed:
                    hashed[i] = [image_phash(im) for im in images[i] or ()]
                hits[i] = bench._image_hit(hashed[i])
    return hits
