"""Turn an image reference from a source row into a checked, self-contained image record.

A reference may be a relative path, a path inside the source's folder, a data: URL, raw bytes,
a `{"bytes", "path"}` dict (the Hugging Face Image layout) or a PIL image. Anything that would
let a dataset pull in files from elsewhere on the machine, reach the network unasked, or hand a
trainer an image it cannot decode is rejected with a reason, never silently dropped.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "ftp://", "hf://")


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000  # ~6300 x 6300; far beyond any VLM input, small enough to decode
    max_bytes: int = 64 << 20
    allow_remote: bool = False
    timeout_s: float = 20.0


class ImageRejected(Exception):
    """A reference that cannot become an image; `reason` is a stable quarantine code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def rgb_image(data: bytes) -> Any:
    """Encoded image bytes as a loaded RGB PIL image (what a model's processor takes)."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def load_image(ref: Any, base_dir: Path, limits: ImageLimits, root: Path | None = None) -> dict[str, Any]:
    """Resolve `ref` against `base_dir` (a path may not leave `root`, by default `base_dir`) and
    return the `image` struct of the schemas."""
    data, origin = _read_bytes(ref, base_dir, root or base_dir, limits)
    if len(data) > limits.max_bytes:
        raise ImageRejected("image over size limit", f"{origin}: {len(data)} bytes > {limits.max_bytes}")
    fmt, width, height = _check_decodes(data, origin, limits)
    return {
        "bytes": data,
        "format": fmt,
        "width": width,
        "height": height,
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": origin,
    }


def _read_bytes(ref: Any, base_dir: Path, root: Path, limits: ImageLimits) -> tuple[bytes, str | None]:
    if isinstance(ref, bytes | bytearray | memoryview):
        return bytes(ref), None
    if isinstance(ref, Image.Image):
        buf = io.BytesIO()
        ref.save(buf, format=ref.format or "PNG")
        return buf.getvalue(), None
    if isinstance(ref, dict):
        data = ref.get("bytes")
        if isinstance(data, str):  # JSON exports carry the bytes as base64 text
            return _decode_base64(data, "image bytes"), ref.get("path")
        if data:
            return bytes(data), ref.get("path")
        ref = ref.get("path")
    if not isinstance(ref, str) or not ref.strip():
        raise ImageRejected("missing image", f"empty image reference {ref!r}")
    ref = ref.strip()
    if ref.startswith("data:"):
        return _decode_data_url(ref), "data-url"
    if ref.lower().startswith(REMOTE_SCHEMES):
        return _fetch_remote(ref, limits), ref
    return _read_local(ref, base_dir, root, limits), ref


def _read_local(ref: str, base_dir: Path, root: Path, limits: ImageLimits) -> bytes:
    try:
        return _read_inside(ref, base_dir, root, limits)
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops, long names
        raise ImageRejected("invalid image path", f"{ref[:200]!r}: {type(exc).__name__}: {exc}") from exc


def _read_inside(ref: str, base_dir: Path, root: Path, limits: ImageLimits) -> bytes:
    raw = Path(ref.removeprefix("file://"))
    path = raw if raw.is_absolute() else base_dir / raw
    base = root.resolve()
    # resolve() follows symlinks and `..`, so a link inside the folder pointing out is caught too.
    resolved = path.resolve(strict=False)
    if not resolved.is_relative_to(base):
        raise ImageRejected("image outside source folder", f"{ref} resolves to {resolved}, outside {base}")
    if not resolved.is_file():
        raise ImageRejected("image not found", f"{ref} (looked in {base_dir})")
    size = resolved.stat().st_size
    if size > limits.max_bytes:
        raise ImageRejected("image over size limit", f"{ref}: {size} bytes > {limits.max_bytes}")
    return resolved.read_bytes()


def _decode_data_url(ref: str) -> bytes:
    header, _, payload = ref.partition(",")
    if not header.endswith(";base64"):
        raise ImageRejected("not an image", "data: URL is not base64-encoded")
    return _decode_base64(payload, "data: URL")


def _decode_base64(payload: str, what: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise ImageRejected("not an image", f"{what} is not valid base64: {exc}") from exc


def _fetch_remote(url: str, limits: ImageLimits) -> bytes:
    if not limits.allow_remote:
        raise ImageRejected("remote image not allowed", f"{url} (pass --allow-remote-images to fetch it)")
    if not url.lower().startswith(("http://", "https://")):
        raise ImageRejected("remote image not allowed", f"{url}: only http(s) can be fetched")
    try:
        with urllib.request.urlopen(url, timeout=limits.timeout_s) as resp:
            return _read_within(resp, url, limits)
    except (OSError, ValueError) as exc:
        raise ImageRejected("image fetch failed", f"{url}: {exc}") from exc


def _read_within(resp: Any, url: str, limits: ImageLimits) -> bytes:
    """The body, read in chunks against one deadline for the whole image: a socket timeout bounds
    each read only, and a server dripping a byte at a time would never trip it."""
    deadline = time.monotonic() + limits.timeout_s
    chunks, size = [], 0
    while size <= limits.max_bytes:
        if time.monotonic() > deadline:
            raise ImageRejected(
                "image fetch failed", f"{url}: not received within the time limit of {limits.timeout_s:g} s"
            )
        chunk = resp.read1(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_decodes(data: bytes, origin: str | None, limits: ImageLimits) -> tuple[str, int, int]:
    where = origin or "inline image"
    with warnings.catch_warnings():
        # PIL warns between its own limit and twice that; our own limit decides instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > limits.max_pixels:
                    raise ImageRejected(
                        "image over pixel limit",
                        f"{where}: {width}x{height} > {limits.max_pixels} pixels",
                    )
                fmt = im.format or "UNKNOWN"
                im.load()  # decode fully: a truncated file fails here, not in a trainer
        except Image.DecompressionBombError as exc:
            raise ImageRejected("image over pixel limit", f"{where}: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected("not an image", f"{where}: not a recognised image format") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageRejected("truncated or corrupt image", f"{where}: {exc}") from exc
    return fmt, width, height
