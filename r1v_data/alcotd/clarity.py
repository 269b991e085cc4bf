"""Image clarity measured locally, no model needed: QDAM's part of the vision score S_v.

Three cues, each mapped to [0, 1]: sharpness (variance of the Laplacian of the grey image),
resolution (the short side against a 448-pixel InternViT tile), and RMS contrast. A sample's
clarity is the mean over its images of the mean of the three. The mappings are heuristics with
stated constants, not learned: `CLARITY_VERSION` changes when they do.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image

CLARITY_VERSION = "clarity/1"
TILE = 448  # InternViT's input tile: a short side below it is upsampled, losing detail
SHARPNESS_SCALE = 300.0  # Laplacian variance at which sharpness reaches 1 - 1/e
CONTRAST_FULL = 64.0  # grey-level standard deviation counted as full contrast
_MAX_SIDE = 1024  # measure on a bounded copy: the cues are scale-robust, the cost is not


def image_measures(data: bytes) -> dict[str, float]:
    """Raw and mapped clarity cues of one encoded image."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        grey = im.convert("L")
        grey.thumbnail((_MAX_SIDE, _MAX_SIDE))
        pixels = np.asarray(grey, dtype=np.float32)
    laplacian_var = float(_laplacian(pixels).var()) if min(pixels.shape) >= 3 else 0.0
    contrast = float(pixels.std())
    sharpness = 1.0 - math.exp(-laplacian_var / SHARPNESS_SCALE)
    resolution = min(1.0, min(width, height) / TILE)
    contrast_score = min(1.0, contrast / CONTRAST_FULL)
    return {
        "laplacian_var": laplacian_var,
        "min_side": float(min(width, height)),
        "contrast": contrast,
        "sharpness": sharpness,
        "resolution": resolution,
        "contrast_score": contrast_score,
        "clarity": (sharpness + resolution + contrast_score) / 3.0,
    }


def sample_clarity(images: list[dict[str, Any]]) -> float | None:
    """Mean clarity over a sample's images (the `image` structs of the store); None without images."""
    if not images:
        return None
    return sum(image_measures(im["bytes"])["clarity"] for im in images) / len(images)


def _laplacian(p: np.ndarray) -> np.ndarray:
    # the 4-neighbour Laplacian on the interior, without scipy
    return p[1:-1, :-2] + p[1:-1, 2:] + p[:-2, 1:-1] + p[2:, 1:-1] - 4.0 * p[1:-1, 1:-1]
