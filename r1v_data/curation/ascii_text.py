"""Two per-question normalisations as array operations over ASCII text: the exact-dedup key
(`dedup.duplicate_key`) and the decontamination words (`overlap.words`).

In Python each costs 13-22 µs a question (regexes and str methods, one question at a time), and
with MinHash they were most of the first `filter` run's per-sample work. ASCII is one byte a
character, so a batch of questions joined into one lowered byte buffer can be split, classified
and hashed with numpy. Each function says which questions it takes; the others (non-ASCII text,
text that a word rule would rewrite) stay with the Python reference, and for the ones taken the
result is the reference's: `tests/r1v_data/curation/test_ascii_text.py` holds them equal on real
and fuzzed text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from r1v_data.curation.minhash import mix64

MAX_TOKEN = 24  # bytes hashed in numpy per word (3 blocks); a question with a longer one is left out
_M64 = (1 << 64) - 1
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [_M64], dtype=np.uint64)
_MIX = np.uint64(0x9FB21C651E98DF25)
_CHOICES = np.uint64(int.from_bytes(b"choices:", "little"))
_WORD = np.zeros(256, dtype=bool)  # Python's `\\w` on ASCII (lowered): letters, digits, underscore
_WORD[ord("a") : ord("z") + 1] = _WORD[ord("0") : ord("9") + 1] = _WORD[ord("_")] = True


@dataclass
class Joined:
    """The ASCII texts of a batch, lowered and joined by "\\n" (a separator for both forms)."""

    index: np.ndarray  # position of each joined text in the batch
    data: np.ndarray  # uint8; 8 NULs past `size` keep 8-byte reads inside
    starts: np.ndarray  # where each text starts in `data`
    ends: np.ndarray  # where it ends (its "\n", or `size` for the last)

    @property
    def size(self) -> int:
        return len(self.data) - 8

    def at(self) -> np.ndarray:
        """Every byte offset read as a little-endian uint64 (overlapping views of `data`)."""
        return np.ndarray((self.size + 1,), dtype="<u8", buffer=self.data, strides=(1,))


def join_ascii(texts: Sequence[str]) -> Joined:
    """The ASCII ones of `texts`, lowered (ASCII's lower is str.lower and casefold there)."""
    index = np.flatnonzero(np.fromiter((t.isascii() for t in texts), dtype=bool, count=len(texts)))
    chosen = [texts[i] for i in index.tolist()]
    lengths = np.fromiter(map(len, chosen), dtype=np.int64, count=len(chosen))
    data = np.frombuffer(("\n".join(chosen) + "\0" * 8).encode("ascii"), dtype=np.uint8).copy()
    data[(data >= ord("A")) & (data <= ord("Z"))] += 32
    starts = np.cumsum(lengths + 1) - lengths - 1
    return Joined(index, data, starts, starts + lengths)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of every run of True in `mask`."""
    padded = np.zeros(len(mask) + 2, dtype=bool)
    padded[1:-1] = mask
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges[0::2], edges[1::2]


def _in_range(d: np.ndarray, low: str, high: str) -> np.ndarray:
    return np.subtract(d, ord(low), dtype=np.uint8) <= ord(high) - ord(low)  # one pass: bytes wrap


def _before(positions: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many of the sorted `positions` are below each of `at`."""
    return np.searchsorted(positions, at, "left")


def duplicate_keys(j: Joined) -> list[bytes]:
    """`dedup.duplicate_key` of each joined text, as bytes. For ASCII, `normalise_text` is: lower,
    every byte <= 0x20 a separator (str.split's whitespace and `_CONTROL`), runs of them one
    space, stripped; then a space is kept only between two word characters."""
    d = j.data[: j.size]
    sep = d <= 0x20
    start, stop = _runs(sep)
    inside = (start > 0) & (stop < j.size)  # a run at the buffer's ends is a text's leading/trailing space
    left, right = d[np.maximum(start - 1, 0)], d[np.minimum(stop, j.size - 1)]
    # a run holding a join ("\n" between texts) is a text's leading or trailing space
    joins = _before(j.ends, stop) - _before(j.ends, start)
    space = start[inside & (joins == 0) & _WORD[left] & _WORD[right]]
    keep = ~sep
    keep[space] = True
    out = d.copy()
    out[space] = ord(" ")
    buf = out[keep].tobytes()
    # bytes kept before a position: all of them, less the separators, plus the spaces put back
    dropped = np.flatnonzero(sep)
    lo = j.starts - _before(dropped, j.starts) + _before(space, j.starts)
    hi = j.ends - _before(dropped, j.ends) + _before(space, j.ends)
    return [buf[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]


@dataclass
class Tokens:
    """The `overlap.words` of the joined texts that `word_tokens` could take, as hashes."""

    taken: np.ndarray  # bool per joined text: its words are below; the others need `words`
    hashes: np.ndarray  # uint64 per word of the taken texts, text after text (`token_hashes`)
    counts: np.ndarray  # words per joined text (0 for those not taken)


def _needs_rules(j: Joined) -> np.ndarray:
    """Texts on which `overlap.words` would apply a rule before finding words: an options block,
    [asy] code, an <image> placeholder, a thousands comma, a LaTeX command. Decided by their
    triggers, conservatively: a `[`, a `<`, a backslash, a comma before a digit or `}`."""
    d = j.data[: j.size]
    commas = np.flatnonzero(d[:-1] == ord(","))
    after = d[commas + 1]
    at = np.concatenate([
        np.flatnonzero((d == ord("[")) | (d == ord("<")) | (d == ord("\\"))),
        commas[_in_range(after, "0", "9") | (after == ord("}"))],
        np.flatnonzero(j.at()[: j.size] == _CHOICES),
    ])  # fmt: skip
    flagged = np.zeros(len(j.starts), dtype=bool)
    flagged[np.searchsorted(j.starts, at, "right") - 1] = True
    return flagged


def _number_tokens(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of every match of `[0-9]+(?:\\.[0-9]+)?`, left to right: a run of digits takes
    the next run when a single "." joins them, and a run so taken starts no token of its own."""
    start, stop = _runs(_in_range(d, "0", "9"))
    if not len(start):
        return start, stop
    dot = np.zeros(len(start), dtype=bool)
    dot[:-1] = (start[1:] == stop[:-1] + 1) & (d[np.minimum(stop[:-1], len(d) - 1)] == ord("."))
    # runs linked by dots form chains; the 1st, 3rd, ... run of a chain starts a token
    head = np.ones(len(start), dtype=bool)
    head[1:] = ~dot[:-1]
    first = np.flatnonzero(head)[np.cumsum(head) - 1]
    begins = (np.arange(len(start)) - first) % 2 == 0
    ends = np.where(dot, np.roll(stop, -1), stop)
    return start[begins], ends[begins]


def word_tokens(j: Joined) -> Tokens:
    """The words of each joined text that no rule rewrites and whose words all fit `MAX_TOKEN`:
    runs of a-z, and numbers (`_number_tokens`); everything else separates them."""
    d = j.data[: j.size]
    letters = _runs(_in_range(d, "a", "z"))
    numbers = _number_tokens(d)
    start, stop = np.concatenate([letters[0], numbers[0]]), np.concatenate([letters[1], numbers[1]])
    order = np.argsort(start, kind="stable")
    start, stop = start[order], stop[order]
    text = np.searchsorted(j.starts, start, "right") - 1
    long = np.zeros(len(j.starts), dtype=bool)
    long[text[stop - start > MAX_TOKEN]] = True
    taken = ~(_needs_rules(j) | long)
    kept = taken[text]
    counts = np.bincount(text[kept], minlength=len(j.starts))
    return Tokens(taken, token_hashes(j, start[kept], stop[kept] - start[kept]), counts)


def token_hashes(j: Joined, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each `length`-byte word at `start` (`length` <= MAX_TOKEN), 8 bytes at a
    time (most words take one step); equal words hash alike, and `word_hashes` hashes a word
    list the same way."""
    at = j.at()
    h = mix64(
        (length.astype(np.uint64) * _MIX) ^ (at[np.minimum(start, j.size)] & _MASKS[np.minimum(length, 8)])
    )
    longer = np.flatnonzero(length > 8)
    for block in range(1, MAX_TOKEN // 8):
        rest = length[longer] - 8 * block
        part = at[start[longer] + 8 * block] & _MASKS[np.minimum(rest, 8)]
        h[longer] = mix64((h[longer] * _MIX) ^ part)
        longer = longer[rest > 8]
    return h


def word_hashes(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, hashes) of the `words` that a taken text could hold (ASCII, at most MAX_TOKEN
    bytes), hashed as `token_hashes` hashes them in a text."""
    index = np.flatnonzero(
        np.fromiter((w.isascii() and len(w) <= MAX_TOKEN for w in words), dtype=bool, count=len(words))
    )
    j = join_ascii([words[i] for i in index.tolist()])
    return index, token_hashes(j, j.starts, j.ends - j.starts)
