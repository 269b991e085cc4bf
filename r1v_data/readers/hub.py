"""Telling a local path from a Hugging Face Hub id, and failing fast when the Hub is out of reach.

A missing local file must be answered as a missing file, not with a Hub hint or the Hub client's
"Repo id must be in the form ..."; and with no network the Hub clients retry for half a minute
before they give up, so r1v checks that the Hub answers at all (a TCP connection, a few seconds)
before it asks them.
"""

from __future__ import annotations

import os
import socket
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from r1v_data.errors import NetworkError

PROBE_SECONDS = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def looks_like_path(name: str) -> bool:
    """True for what can only be a local path: `./x`, `/x`, `~/x`, `a/b/c`, `x.jsonl`. A Hub id is
    `NAME` or `ORG/NAME` with no file suffix."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", ".."):
        return True
    return name.count("/") > 1 or bool(PurePosixPath(name).suffix.lstrip(".").isalpha())


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def require_hub(what: str, timeout_s: float = PROBE_SECONDS) -> None:
    """Raise NetworkError within `timeout_s` when the Hub's host cannot be reached. Skipped when
    offline mode is on (the clients then read only their cache, and fail at once) and behind a
    proxy (which decides what is reachable)."""
    if hub_offline() or any(os.environ.get(v) for v in _PROXY_VARS):
        return
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise NetworkError(
            f"{what}: cannot reach the Hugging Face Hub at {host} ({why}); check the network, or use a "
            "local copy (HF_HUB_OFFLINE=1 reads only what is already cached)"
        ) from None
