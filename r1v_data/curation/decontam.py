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

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from r1v_data.curation.ascii_text import join_ascii, word_tokens
from r1v_data.curation.overlap import ImageIndex, TextIndex, Words, words
from r1v_data.curation.phash import PHASH_VERSION, phash64
from r1v_data.errors import ConfigError, SourceError

if TYPE_CHECKING:
    from r1v_data.readers.samples import Prepared, RowPlan
    from r1v_data.readers.sources import Record

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
    from r1v_data.readers.presets import FIELDS

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
class Benchmark:
    """One benchmark's indexes; build with `load_benchmark`."""

    spec: str
    name: str
    uri: str
    items: list[str]  # item labels, by index
    text: TextIndex = field(repr=False)
    image_items: list[int] = field(repr=False)  # benchmark image index -> item index
    images: ImageIndex = field(repr=False)
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
    _check_settings(ngram, max_distance, min_ngrams, min_fraction)
    opts = parse_spec(spec)
    source, preset, mapping = _open(spec, opts)
    root = source.base_dir
    from r1v_data.readers.images import ImageLimits
    from r1v_data.readers.samples import RowPlan

    plan = RowPlan(preset, mapping, root / preset.image_dir, root, ImageLimits())
    items: list[str] = []
    docs: list[list[str]] = []
    image_hashes: list[int] = []
    image_items: list[int] = []
    skipped: Counter[str] = Counter()
    for prep in _prepared(source.records(), plan, skipped):
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
        text=TextIndex(docs, ngram),
        image_items=image_items,
        images=ImageIndex(image_hashes, max_distance),
        min_ngrams=min_ngrams,
        min_fraction=min_fraction,
        skipped=skipped,
        fingerprint=source.fingerprint,
    )


def benchmark_identity(
    spec: str,
    *,
    ngram: int = DEFAULT_NGRAM,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    min_ngrams: int = 1,
    min_fraction: float = 0.0,
) -> dict[str, Any]:
    """What `load_benchmark` with these arguments indexes, without reading a row: the spec, the
    settings and the source's fingerprint (a file's size and sha256, a Hub dataset's
    fingerprint). A filter keys its cached sample checks by it, so a benchmark is loaded only
    when the checks run. Image files a benchmark row points to are not in a file's fingerprint:
    replacing one under the same name is not seen (its rows, and so the fingerprint, are)."""
    _check_settings(ngram, max_distance, min_ngrams, min_fraction)
    source = _open(spec, parse_spec(spec))[0]  # a bad spec or preset fails here, before any work
    return {"spec": spec, "uri": source.uri, "fingerprint": source.fingerprint, "ngram": ngram,
            "max_distance": max_distance, "min_ngrams": min_ngrams, "min_fraction": min_fraction,
            "phash": PHASH_VERSION}  # fmt: skip


def _open(spec: str, opts: Spec) -> tuple[Any, Any, Any]:
    """The benchmark's source, with the preset and column mapping it is read by. The readers are
    imported here: a sample-check worker unpickles benchmarks only to search them."""
    from r1v_data.readers.presets import resolve
    from r1v_data.readers.sources import open_source

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
    return source, preset, mapping


def _check_settings(ngram: int, max_distance: int, min_ngrams: int, min_fraction: float) -> None:
    if ngram < 1 or not 0 <= max_distance < 32 or min_ngrams < 1 or not 0 <= min_fraction <= 1:
        raise ConfigError(
            f"decontamination settings out of range: ngram={ngram} (>= 1), max_distance={max_distance} "
            f"(0..31), min_ngrams={min_ngrams} (>= 1), min_fraction={min_fraction} (0..1)"
        )


def _prepared(records: Iterable[Record], plan: RowPlan, skipped: Counter[str]) -> list[Prepared]:
    """The rows ingest would take, as `prepare` reads them; the others counted in `skipped`. The
    schema check runs on all rows at once, not per row (most of the time of a benchmark's load)."""
    from r1v_data.readers.samples import conforming, prepare

    prepared = []
    for record in records:
        prep = prepare(record, plan, validate=False)
        if prep.sample is None:
            skipped[prep.reason or "unknown"] += 1
        else:
            prepared.append(prep)
    ok = conforming([p.sample for p in prepared])
    if bad := ok.count(False):
        skipped["invalid record"] += bad
    return [p for p, good in zip(prepared, ok, strict=True) if good]


def check_all(
    benchmarks: Sequence[Benchmark],
    questions: Sequence[str],
    images: Sequence[Sequence[ImageLike] | None] | None = None,
) -> list[Hit | None]:
    """The first hit per candidate across several benchmarks, tried in the order given (text,
    then images, per benchmark). Each question is normalised once and each image hashed at most
    once, however many benchmarks there are. Only the candidates `_may_hit` keeps are tested:
    the others can hit nothing."""
    todo = _may_hit(benchmarks, questions, images)
    found = _check_exact(
        benchmarks, [questions[i] for i in todo], [images[i] for i in todo] if images is not None else None
    )
    out: list[Hit | None] = [None] * len(questions)
    for i, hit in zip(todo, found, strict=True):
        out[i] = hit
    return out


def _may_hit(
    benchmarks: Sequence[Benchmark],
    questions: Sequence[str],
    images: Sequence[Sequence[ImageLike] | None] | None,
) -> list[int]:
    """The candidates that may hit. The rest have no image to test, and words (`ascii_text`,
    numpy: ~20 us a question less than `words`) that share no n-gram with any benchmark's index
    and are no short text of one: hits are rare, so most candidates skip the Python test."""
    joined = join_ascii(questions)
    tokens = word_tokens(joined)
    cleared = tokens.taken.copy()
    for bench in benchmarks:
        if (maybe := bench.text.could_match(tokens)) is None:
            return list(range(len(questions)))
        cleared &= ~maybe
    exact = np.ones(len(questions), dtype=bool)
    exact[joined.index[cleared]] = False
    if images is not None and any(b.image_items for b in benchmarks):
        exact |= np.fromiter((bool(im) for im in images), dtype=bool, count=len(questions))
    return np.flatnonzero(exact).tolist()


def _check_exact(
    benchmarks: Sequence[Benchmark],
    questions: Sequence[str],
    images: Sequence[Sequence[ImageLike] | None] | None,
) -> list[Hit | None]:
    out: list[Hit | None] = []
    for lo in range(0, len(questions), BATCH):
        batch = Words.of([words(q) for q in questions[lo : lo + BATCH]])
        out.extend(_check_chunk(benchmarks, batch, images[lo : lo + BATCH] if images is not None else None))
    return out


def _check_chunk(
    benchmarks: Sequence[Benchmark],
    batch: Words,
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
