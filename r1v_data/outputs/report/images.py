"""Thumbnails for the report: a sample's image downscaled with Pillow and inlined as a small
WebP (JPEG where Pillow lacks WebP) data URI, so the page carries a few kilobytes per picture."""

from __future__ import annotations

import base64
import io

THUMB_SIDE = 240  # pixels, the longer side
QUALITY = 70


def first_thumbnail(data: bytes | None, side: int = THUMB_SIDE) -> str | None:
    """A data URI for the image in `data`, or None when there is none or it does not decode
    (a report shows what it can; ingest already checked the images it stored)."""
    if not data:
        return None
    from PIL import Image, UnidentifiedImageError, features

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((side, side))
            rgb = _flatten(im)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    fmt = "WEBP" if features.check("webp") else "JPEG"
    buf = io.BytesIO()
    rgb.save(buf, fmt, quality=QUALITY)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _flatten(im: object) -> object:
    """RGB on white: transparent diagrams (common in math sets) would turn black in a JPEG."""
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.mode in ("RGBA", "LA", "P"):
        rgba = im.convert("RGBA")
        back = Image.new("RGB", rgba.size, "white")
        back.paste(rgba, mask=rgba.getchannel("A"))
        return back
    return im.convert("RGB")
