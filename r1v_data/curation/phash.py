"""Perceptual image hashes for near-duplicate and contamination checks (numpy only).

`phash64` is the classic DCT hash: grey, resize to 32x32, 2-D DCT-II, keep the 8x8 lowest
frequencies without the DC term's influence on the threshold, one bit per coefficient above
their median. Re-encoding, resizing and mild blur or brightness changes move a few bits;
different pictures differ in about half of the 64. `PHASH_VERSION` changes when the bits do.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

PHASH_VERSION = "phash/1"
_SIDE = 32
_KEEP = 8


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    # orthonormal DCT-II basis, so that D @ X @ D.T is the 2-D transform
    k = np.arange(_SIDE)[:, None]
    n = np.arange(_SIDE)[None, :]
    d = np.cos(np.pi * (2 * n + 1) * k / (2 * _SIDE)) * np.sqrt(2.0 / _SIDE)
    d[0] /= np.sqrt(2.0)
    return d


def phash64(data: bytes) -> int:
    """64-bit perceptual hash of one encoded image, as an unsigned int."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (8 * _SIDE, 8 * _SIDE))  # JPEG: decode at a reduced scale, several times faster
        grey = im.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
        pixels = np.asarray(grey, dtype=np.float64)
    d = _dct_matrix()
    low = (d @ pixels @ d.T)[:_KEEP, :_KEEP].ravel()
    # the DC term is brightness, not structure; the median of the other 63 is their 32nd value
    # (np.median's own answer for an odd count, which costs 10x a partition here)
    bits = low > np.partition(low[1:], 31)[31]
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()
