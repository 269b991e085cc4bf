"""The OpenAI chat-completions wire format as r1v reads and writes it: image data URLs, the text of
a reply's content, the server's own error message, and Retry-After headers."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from r1v_data.redact import redact

RETRY_AFTER_MAX_S = 600.0


def image_mime(data: bytes) -> str:
    """The mime type of an encoded image, from its magic numbers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    return "application/octet-stream"  # the server will say what it makes of it


@lru_cache(maxsize=256)  # the n samples of a problem carry the same image bytes
def image_url(data: bytes, inline: bool) -> str:
    mime = image_mime(data)
    if inline:
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f"data:{mime};sha256,{hashlib.sha256(data).hexdigest()}"


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def server_message(raw: bytes) -> str:
    """The server's own words about a failure, without credentials it may have echoed."""
    return redact(_server_message(raw))


def _server_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return body_snippet(raw)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return data[key][:500]
    return body_snippet(raw)


def body_snippet(raw: bytes, limit: int = 200) -> str:
    # redacted before it is cut, so a key that straddles the cut cannot leave a readable prefix
    text = redact(raw[: limit * 16].decode("utf-8", "replace"))[:limit].strip()
    return repr(text + ("…" if len(raw) > limit else "")) if text else "empty body"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def exception_reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
