"""The indexes decontamination searches: benchmark questions as normalised words and hashed word
n-grams (numpy, a batch of candidates at a time), and benchmark images by perceptual hash.
`decontam.py` says what the normalisation keeps and drops."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain, pairwise

import numpy as np
import pyarrow as pa

from r1v_data.curation.ascii_text import Tokens, word_hashes

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


@dataclass
class Words:
    """Normalised questions with their words numbered once, so that each benchmark maps the
    distinct words of a batch to its own vocabulary instead of looking up every word again."""

    docs: list[list[str]]
    distinct: list[str]
    ids: np.ndarray  # index into `distinct` of every word, all documents concatenated
    lengths: np.ndarray

    @classmethod
    def of(cls, docs: list[list[str]]) -> Words:
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        flat = list(chain.from_iterable(docs))
        try:  # Arrow numbers them in C++, in order of first use, as the dict below does
            encoded = pa.array(flat, pa.string()).dictionary_encode()
            return cls(
                docs, encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int64), lengths
            )
        except UnicodeError:  # a lone surrogate (from JSON) is no UTF-8 for Arrow
            seen: dict[str, int] = {}
            ids = np.fromiter((seen.setdefault(w, len(seen)) for w in flat), dtype=np.int64, count=len(flat))
            return cls(docs, list(seen), ids, lengths)


class TextIndex:
    """Sorted n-gram hashes -> benchmark item, plus whole texts of items shorter than n words."""

    def __init__(self, docs: list[list[str]], n: int):
        self.n = n
        batch = Words.of(docs)
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

    def _ngrams(self, batch: Words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        get = self.vocab.get
        lut = np.fromiter((get(w, 0) for w in batch.distinct), dtype=np.int64, count=len(batch.distinct))
        return _ngram_hashes(lut[batch.ids], batch.lengths, self.n, self.values)

    def could_match(self, tokens: Tokens) -> np.ndarray | None:
        """For each text `ascii_text.word_tokens` took: whether `matches` may find it. Only a
        superset (two words may hash alike; a text found here still takes `matches`), never a
        miss. None when two of this index's words hash alike: then every text takes `matches`."""
        if (lut := self._hashed_vocab()) is None:
            return None
        keys, ids = lut
        word_ids = np.zeros(len(tokens.hashes), dtype=np.int64)
        if len(keys):
            slot = np.minimum(np.searchsorted(keys, tokens.hashes), len(keys) - 1)
            word_ids = np.where(keys[slot] == tokens.hashes, ids[slot], 0)
        out = (tokens.counts > 0) & (tokens.counts < self.n) & bool(self.short)
        if len(self.hashes):
            hashes, doc, _ = _ngram_hashes(word_ids, tokens.counts, self.n, self.values)
            slot = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            out[doc[self.hashes[slot] == hashes]] = True
        return out

    def _hashed_vocab(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(sorted word hashes, their vocabulary ids) of the words a taken text can hold; None
        if two of them collide. Made once per index, where it is used (a worker process)."""
        if not hasattr(self, "_lut"):
            words = list(self.vocab)
            index, hashes = word_hashes(words)
            ids = np.array([self.vocab[words[i]] for i in index.tolist()], dtype=np.int64)
            order = np.argsort(hashes)
            keys = hashes[order]
            self._lut = None if np.any(keys[1:] == keys[:-1]) else (keys, ids[order])
        return self._lut

    def matches(self, batch: Words) -> dict[int, tuple[int, int, int]]:
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


class ImageIndex:
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
