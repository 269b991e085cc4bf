"""Exact and near-duplicate samples from a `sample_scan.Scan`, with the decisions of
`dedup.exact_duplicates` and `dedup.sample_near_duplicates`, in memory that grows by a fixed
number of bytes per sample (see `sample_checks.sample_drops` for the bound).

The in-memory finders hold every signature (512 bytes a sample) and all 21 x 5 LSH key rows at
once. Here one key row (a text band combined with an image block) is built at a time from the
band read back from disk, `bucket_pairs` runs on it exactly as it does there (so the candidates
are the same pairs), and only the candidates' signatures are read back to verify them.
"""

from __future__ import annotations

import numpy as np

from r1v_data.curation.dedup import _Images, keep_first_pairs
from r1v_data.curation.minhash import bucket_pairs, mix64
from r1v_data.curation.sample_scan import Scan

_FOLD = 1 << 22  # candidate codes held before duplicates across key rows are folded away
_VERIFY = 1 << 16  # candidate pairs whose signatures are read and compared at once


def exact_firsts(digests: np.ndarray) -> np.ndarray:
    """For each item, the first item with the same digest (itself when it is the first)."""
    n = len(digests)
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: equal digests in item order
    ordered = digests[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    del ordered
    starts = np.flatnonzero(new)
    first = np.empty(n, dtype=np.int64)
    first[order] = order[np.repeat(starts, np.diff(np.append(starts, n)))]
    return first


def near_duplicates(
    scan: Scan, eligible: np.ndarray, *, threshold: float, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dropped, kept, estimated Jaccard) among the `eligible` samples (not exact copies, text with
    words), as `sample_near_duplicates` decides them: texts near-duplicate and images matching."""
    images = _Images.from_arrays(scan.counts, scan.offsets, scan.flat, max_distance)
    left, right = _candidates(scan, eligible, images)
    plain = (images.counts[left] == 0) & (images.counts[right] == 0)
    img_l, img_r, _ = images.matches(left[~plain], right[~plain])
    left, right = np.concatenate([left[plain], img_l]), np.concatenate([right[plain], img_r])
    est = _estimates(scan, left, right)
    ok = est >= threshold
    return keep_first_pairs(left[ok], right[ok], est[ok])


def _candidates(scan: Scan, eligible: np.ndarray, images: _Images) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (sample indices, left < right) that share a text band and an image block.

    A sample without images has the same key in every image block (no first image, count 0), and
    never shares a key with a sample with images (their counts differ): those samples are bucketed
    once per band, not once per block, and the others apart, which finds the same pairs as one
    call over all of them per (band, block) with a quarter of the sorting on a store of text
    questions. The key bits compared stay those of the whole set."""
    m = len(eligible)
    bits = max(1, (m - 1).bit_length())
    has_images = images.counts[eligible] > 0
    groups = [(np.flatnonzero(~has_images), 1), (np.flatnonzero(has_images), images.max_distance + 1)]
    found, held = [np.zeros(0, dtype=np.int64)], 0
    for t in range(scan.bands):
        text_key = scan.band(t)[eligible]
        for members, blocks in groups:
            if len(members) < 2:
                continue
            for b in range(blocks):
                block = images.block_key(eligible[members], b)
                key = mix64(block * np.uint64(0x9E3779B97F4A7C15) ^ text_key[members])
                left, right = bucket_pairs(key[None, :], bits=bits)
                found.append(members[left] * m + members[right])
                held += len(left)
                if held > _FOLD:
                    found, held = [np.unique(np.concatenate(found))], 0
    codes = np.unique(np.concatenate(found))
    return eligible[codes // max(m, 1)], eligible[codes % max(m, 1)]


def _estimates(scan: Scan, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The estimated Jaccard of each pair, from the signatures on disk, `_VERIFY` pairs at a time."""
    out = [np.zeros(0)]
    for lo in range(0, len(left), _VERIFY):
        i, j = left[lo : lo + _VERIFY], right[lo : lo + _VERIFY]
        rows, where = np.unique(np.concatenate([i, j]), return_inverse=True)
        sig = scan.signatures(rows)
        out.append((sig[where[: len(i)]] == sig[where[len(i) :]]).mean(axis=1))
    return np.concatenate(out)
