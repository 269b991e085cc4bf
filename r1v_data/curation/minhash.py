"""MinHash signatures and LSH for word n-gram shingles, in bulk with numpy.

Why not datasketch: it hashes every shingle `num_perm` times and does per-shingle work in Python.
Here the text of ~0.5 MiB of documents at a time goes through numpy as one byte buffer: words are
found and hashed together (each word's first 8 bytes read as one integer), an n-gram's hash is a
combination of its words' hashes, and each shingle is hashed O(1) times, not `num_perm` times.

Sketch: "fast similarity sketching" (Dahlgaard, Knudsen and Thorup, FOCS 2017), a one-permutation
hash whose empty bins are filled the same way in every document. Round 0 throws each shingle into
one of K bins with a random value, and a bin keeps the minimum (plain one-permutation hashing).
While a document has empty bins, round t throws each of its shingles into bin `b + t*s mod K`
(`s` a unit mod K, so K rounds visit every bin) with a fresh value; an empty bin takes the minimum
of the first round that reaches it, and filled bins never change. For any two documents the first
shingle of A ∪ B to reach bin i is a uniform pick of A ∪ B, so P(sig_A[i] == sig_B[i]) = J(A, B)
exactly, as with classic MinHash, and short texts get the same accuracy as long ones (densified
one-permutation hashing is noisier on sets smaller than K). Cost: about shingles + K·ln K hashes
per document instead of shingles·K.

Signatures are uint32 and only comparable between calls with the same `num_perm`, `ngram` and
`seed`; a document with no words has no shingles and a row of `EMPTY`.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np

EMPTY = 0xFFFFFFFF  # signature value of a bin with no shingle (only in rows of empty documents)
MAX_BUCKET_NEIGHBOURS = 32  # see bucket_pairs
_CHUNK_CHARS = 1 << 19  # text per numpy pass: big enough to amortise calls, small enough for cache
_CHUNK_TEXTS = 1 << 15
_MAX_PERM = 1 << 15
_WORD_BLOCKS = 8  # words up to 64 bytes are hashed in numpy, longer ones with hashlib
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b]")  # ASCII controls that str.split keeps inside words
_ERRORS = "surrogatepass"  # lone surrogates (from JSON) are odd characters, not a crash
_M64 = (1 << 64) - 1
_U32 = np.uint64(0xFFFFFFFF)


def normalise_text(text: str) -> str:
    """The form dedup compares: Unicode NFKC, case-folded, runs of whitespace and ASCII control
    characters collapsed to one space, stripped. `text.identity_text` plus case folding: two
    copies of a problem that differ only in case are one problem for dedup."""
    if text.isascii():
        text = text.lower()  # NFKC leaves ASCII alone, and casefold is lower there
    else:
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def shingles(text: str, ngram: int = 5) -> set[str]:
    """Reference (slow, exact) shingle set the signatures estimate: word n-grams of
    `normalise_text(text)`; a text of fewer than `ngram` words is one shingle, an empty one none."""
    words = normalise_text(text).split()
    if not words:
        return set()
    return {" ".join(words[i : i + ngram]) for i in range(max(1, len(words) - ngram + 1))}


def _splitmix(state: int) -> int:
    z = (state + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


_WORDS, _NGRAMS, _ROUNDS, _BANDS, _ROWS = range(1, 6)  # one stream of constants per use


@lru_cache(maxsize=32)
def _constants(use: int, seed: int, count: int) -> np.ndarray:
    """`count` odd 64-bit constants for `use` and `seed` (splitmix64: the same on every platform)."""
    base = _splitmix(_splitmix(use) ^ (seed & _M64))
    return np.array([_splitmix(base + i) | 1 for i in range(count)], dtype=np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array: each output bit depends on
    every input bit, and it is a bijection (distinct inputs stay distinct)."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [_M64], dtype=np.uint64)


def _word_hashes(texts: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the words of `texts`, in order, and the number of words of each text.

    ASCII texts go in as they are (lowercased and split here, on bytes <= 0x20, which is what
    `normalise_text(t).split()` does); others through `normalise_text` first."""
    prepared = [t if t.isascii() else normalise_text(t) for t in texts]
    sizes = np.fromiter(
        (len(t) if t.isascii() else len(t.encode(errors=_ERRORS)) for t in prepared),
        dtype=np.int64,
        count=len(texts),
    )
    # "\n" ends every text so no word spans two; 8 NULs let the last word's 8-byte read stay inside
    raw = np.frombuffer(("\n".join(prepared) + "\n" + "\0" * 8).encode(errors=_ERRORS), dtype=np.uint8)
    data = np.subtract(raw, ord("A"), dtype=np.uint8)  # lowercase A-Z (UTF-8 bytes are >= 0x80)
    np.less(data, 26, out=data.view(bool))
    np.left_shift(data, 5, out=data)
    data += raw
    size = len(data) - 8
    inword = np.zeros(size + 2, dtype=bool)
    np.greater(data[:size], 0x20, out=inword[1:-1])
    edges = np.flatnonzero(inword[1:] != inword[:-1])
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]
    # every byte offset read as a little-endian uint64 (unaligned, overlapping views of `data`)
    at = np.ndarray((size + 1,), dtype="<u8", buffer=data, strides=(1,))
    words = at.take(starts) & _MASKS[np.minimum(lengths, 8)]
    long_words = np.flatnonzero(lengths > 8)
    c = _constants(_WORDS, seed, 2)
    for block in range(1, _WORD_BLOCKS):  # later 8-byte blocks of words longer than 8 bytes
        if not long_words.size:
            break
        rest = lengths[long_words] - 8 * block
        part = at[starts[long_words] + 8 * block] & _MASKS[np.minimum(rest, 8)]
        # a bijective mix between blocks: a plain multiply only carries differences upwards
        words[long_words] = mix64(words[long_words] * c[0]) ^ part
        long_words = long_words[rest > 8]
    for i in long_words.tolist():  # rare (URLs, base64 blobs): one call per word, not per block
        digest = hashlib.blake2b(data[starts[i] : starts[i] + lengths[i]].tobytes(), digest_size=8).digest()
        words[i] = int.from_bytes(digest, "little")
    # a light mix so that n-gram sums of these are not linear in the raw bytes
    words ^= words >> np.uint64(32)
    words *= c[1]
    words ^= words >> np.uint64(29)
    ends = np.cumsum(sizes + 1)
    counts = np.diff(np.searchsorted(starts, ends), prepend=0)
    return words, counts


def _shingle_hashes(words: np.ndarray, counts: np.ndarray, ngram: int, seed: int) -> np.ndarray:
    """Mixed 64-bit hashes of every word n-gram, text after text; per text max(1, words - n + 1)
    of them (a text shorter than n words is one shingle of all its words), none for empty texts."""
    c = _constants(_NGRAMS, seed, ngram + 1)
    n = len(words)
    sums = words * c[0]
    for t in range(1, min(ngram, n)):
        sums[: n - t] += words[t:] * c[t]
    firsts = np.cumsum(counts) - counts
    per_text = np.where(counts >= ngram, counts - ngram + 1, (counts > 0).astype(np.int64))
    offsets = np.cumsum(per_text) - per_text
    index = np.arange(per_text.sum()) + np.repeat(firsts - offsets, per_text)
    out = sums[index]
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    if short.size:  # their sums above ran into the next text: redo them over their own words
        partial = np.zeros(short.size, dtype=np.uint64)
        for t in range(ngram - 1):
            has = counts[short] > t
            partial[has] += words[firsts[short[has]] + t] * c[t]
        out[offsets[short]] = partial + counts[short].astype(np.uint64) * c[ngram]
    out ^= c[ngram]
    return mix64(out)


@lru_cache(maxsize=16)
def _units(k: int) -> np.ndarray:
    """Steps s with gcd(s, k) == 1, so that b + t*s mod k, t = 0..k-1, visits every bin once."""
    return np.array([s for s in range(1, max(k, 2)) if math.gcd(s, k) == 1] or [1], dtype=np.int64)


def _sketch(hashes: np.ndarray, per_text: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """Fast similarity sketch of each text's shingle hashes (see the module docstring)."""
    n_texts, k = len(per_text), num_perm
    sig = np.full(n_texts * k, EMPTY, dtype=np.uint32)
    if not hashes.size:
        return sig.reshape(n_texts, k)
    halves = hashes.astype("<u8", copy=False).view("<u4")
    low, high = halves[0::2], halves[1::2]
    # intp indices throughout: numpy gathers with int32 indices are several times slower
    base = np.repeat(np.arange(n_texts, dtype=np.intp) * k, per_text)
    power_of_two = k & (k - 1) == 0
    if power_of_two and k > 1:
        first = (high >> np.uint32(33 - k.bit_length())).astype(np.intp)  # the top log2(k) bits
        # the units mod 2**m are the odd numbers; bits 32.. of the hash, which the bin skips
        step = ((high.astype(np.intp) << 1) | 1) & (k - 1)
    else:
        first = ((high.astype(np.uint64) * np.uint64(k)) >> np.uint64(32)).astype(np.intp)
        units = _units(k)
        step = units[(high & np.uint32(0xFFFFFF)) % len(units)]
    np.minimum.at(sig, base + first, np.minimum(low, np.uint32(EMPTY - 1)))  # EMPTY means no value
    filled = sig != EMPTY
    missing = k - filled.reshape(n_texts, k).sum(axis=1)
    missing[per_text == 0] = 0
    total, alive_texts = int(missing.sum()), np.count_nonzero(missing)
    held = per_text.copy()  # shingles per text in the arrays below
    rounds = _constants(_ROUNDS, seed, k)
    claim = np.zeros(n_texts * k, dtype=np.intp)  # scratch, to count distinct keys without a sort
    for t in range(1, k):
        if total == 0:
            break
        if 2 * alive_texts <= np.count_nonzero(held):
            # drop the shingles of full texts once half of them are full: they change nothing
            alive = np.repeat(missing > 0, held)
            base, first, step, hashes = base[alive], first[alive], step[alive], hashes[alive]
            held[missing == 0] = 0
        first += step
        if not power_of_two:
            first %= k
        bins = (first & (k - 1) if power_of_two else first) + base
        fresh = np.flatnonzero(~filled[bins])
        if not fresh.size:
            continue
        keys = bins[fresh]
        values = (mix64(hashes[fresh] ^ rounds[t]) & _U32).astype(np.uint32)
        np.minimum.at(sig, keys, np.minimum(values, np.uint32(EMPTY - 1)))
        filled[keys] = True
        # of several writes to one key, one survives in `claim`: count each newly filled bin once
        order = np.arange(len(keys), dtype=np.intp)
        claim[keys] = order
        distinct = keys[claim[keys] == order]
        missing -= np.bincount(distinct // k, minlength=n_texts)
        total -= len(distinct)
        alive_texts = np.count_nonzero(missing)
    return sig.reshape(n_texts, k)


def _chunks(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(start, stop) of runs of texts with about _CHUNK_CHARS characters (at least one text)."""
    start = 0
    while start < len(texts):
        stop, chars = start + 1, len(texts[start])
        while stop < len(texts) and chars < _CHUNK_CHARS and stop - start < _CHUNK_TEXTS:
            chars += len(texts[stop])
            stop += 1
        yield start, stop
        start = stop


def minhash_signatures(
    texts: Sequence[str], *, num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> np.ndarray:
    """MinHash signatures of the word `ngram`-shingles of `normalise_text(t)` for each text.

    Returns a (len(texts), num_perm) uint32 array; the fraction of equal entries between two rows
    estimates the Jaccard similarity of the two shingle sets (standard error about
    sqrt(J(1-J)/num_perm)). Texts with no words get a row of `EMPTY`, which matches nothing."""
    if not 1 <= num_perm <= _MAX_PERM or ngram < 1:
        raise ValueError(f"need 1 <= num_perm <= {_MAX_PERM} and ngram >= 1, got {num_perm} and {ngram}")
    out = np.full((len(texts), num_perm), EMPTY, dtype=np.uint32)
    for start, stop in _chunks(texts):
        words, counts = _word_hashes(texts[start:stop], seed)
        hashes = _shingle_hashes(words, counts, ngram, seed)
        per_text = np.where(counts >= ngram, counts - ngram + 1, (counts > 0).astype(np.int64))
        out[start:stop] = _sketch(hashes, per_text, num_perm, seed)
    return out


def lsh_params(threshold: float, num_perm: int, recall_at_threshold: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest chance candidates) for which a pair of true
    Jaccard `threshold` still shares a band with probability >= `recall_at_threshold`.

    Recall is favoured over precision, unlike datasketch's balanced choice, because candidates are
    verified against the signatures afterwards: a chance candidate costs one row comparison."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall_at_threshold:
            return bands, rows
    return num_perm, 1


def bucket_pairs(
    keys: np.ndarray, max_neighbours: int = MAX_BUCKET_NEIGHBOURS, bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of columns that share a value in some row of `keys` (bands x items).

    In each bucket every item is paired with the bucket's first item and with the
    `max_neighbours` items just before it, so a bucket of m equal keys costs O(m), not O(m²):
    a later copy still meets the first (kept) copy, which is what keep-first dedup needs.
    Keys are compared without their low `bits` bits (default: those an item index needs), where
    the index goes; a caller bucketing part of a larger set passes the larger set's `bits`."""
    n = keys.shape[1]
    codes = np.zeros(0, dtype=np.int64)
    if n < 2:
        return codes, codes
    bits = max(1, (n - 1).bit_length()) if bits is None else bits
    low = np.uint64((1 << bits) - 1)
    found, held = [codes], 0
    for band in keys:
        before = len(found)
        # the index goes in the low bits, so one plain sort groups equal keys, each in item order
        packed = (band & ~low) | np.arange(n, dtype=np.uint64)
        packed.sort()
        heads = packed >> np.uint64(bits)
        items = (packed & low).astype(np.int64)
        for d in range(1, min(n, max_neighbours + 1)):
            same = np.flatnonzero(heads[d:] == heads[:-d])
            if not same.size:
                break
            found.append(items[same] * n + items[same + d])
        else:  # buckets longer than max_neighbours: the rest meet their bucket's first item
            starts = np.flatnonzero(np.concatenate([[True], heads[1:] != heads[:-1]]))
            first = np.repeat(starts, np.diff(np.append(starts, n)))
            deep = np.flatnonzero(np.arange(n) - first > max_neighbours)
            found.append(items[first[deep]] * n + items[deep])
        held += sum(len(f) for f in found[before:])
        if held > 1 << 22:  # many repeats across bands: fold them away before memory grows
            found, held = [np.unique(np.concatenate(found))], 0
    codes = np.unique(np.concatenate(found))
    return codes // n, codes % n


def identical_rows(signatures: np.ndarray, batch: int = 8192) -> np.ndarray:
    """For each row, the index of the first earlier row equal to it, else -1 (O(n log n))."""
    n, k = signatures.shape
    c = _constants(_ROWS, 0, k)
    digest = np.empty(n, dtype=np.uint64)
    for lo in range(0, n, batch):  # a 64-bit hash of each whole row, a batch of rows at a time
        digest[lo : lo + batch] = (signatures[lo : lo + batch].astype(np.uint64) * c).sum(axis=1)
    order = np.argsort(digest, kind="stable")  # equal digests together, in row order
    ordered = digest[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    first = np.empty(n, dtype=np.int64)
    first[order] = order[np.repeat(starts, np.diff(np.append(starts, n)))]
    copies = np.flatnonzero(first != np.arange(n))
    # a digest collision between different rows would be a false copy: check the rows themselves
    differ = (signatures[copies] != signatures[first[copies]]).any(axis=1)
    first[copies[differ]] = copies[differ]
    return np.where(first == np.arange(n), -1, first)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """LSH keys, bands x rows of `sig`: one mixed 64-bit key per band of `rows` entries."""
    c = _constants(_BANDS, 0, rows)
    view = sig[:, : bands * rows].reshape(len(sig), bands, rows)
    keys = np.zeros((len(sig), bands), dtype=np.uint64)
    for r in range(rows):
        keys += view[:, :, r].astype(np.uint64) * c[r]
    keys += np.arange(bands, dtype=np.uint64) * c[0]  # equal rows in different bands: different keys
    return mix64(keys).T.copy()


def candidate_pairs(signatures: np.ndarray, *, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """LSH candidates: pairs (i, j), i < j, of rows that share a band (see `lsh_params`); rows of
    `EMPTY` (texts with no words) are left out."""
    k = signatures.shape[1]
    live = np.flatnonzero(signatures[:, 0] != EMPTY)
    bands, rows = lsh_params(threshold, k)
    left, right = bucket_pairs(band_keys(signatures[live], bands, rows))
    return live[left], live[right]


def similar_pairs(
    signatures: np.ndarray, *, threshold: float = 0.8, batch: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows whose signatures agree on at least `threshold` of their entries.

    Each LSH candidate (`candidate_pairs`) is checked on the full signature, so a pair is
    returned only if its estimated Jaccard is >= `threshold`. Returns (i, j, estimate), i < j."""
    k = signatures.shape[1]
    left, right = candidate_pairs(signatures, threshold=threshold)
    keep_i, keep_j, keep_s = [np.zeros(0, dtype=np.intp)], [np.zeros(0, dtype=np.intp)], [np.zeros(0)]
    for lo in range(0, len(left), batch):  # bounded memory: batch x k comparisons at a time
        i, j = left[lo : lo + batch], right[lo : lo + batch]
        est = (signatures[i] == signatures[j]).sum(axis=1) / k
        ok = est >= threshold
        keep_i.append(i[ok])
        keep_j.append(j[ok])
        keep_s.append(est[ok])
    return np.concatenate(keep_i), np.concatenate(keep_j), np.concatenate(keep_s)
