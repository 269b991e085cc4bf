"""A small synchronous HTTP client for the batch APIs: a handful of calls per batch (upload,
create, poll every few seconds, download), so the standard library's urllib is enough and the
calls stay in the caller's thread (Ctrl-C interrupts a poll at once).

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with full-jitter
backoff, at least the server's Retry-After; anything else raises `BackendError` with the server's
own message, without credentials.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from r1v_data.backends.base import BackendError
from r1v_data.backends.openai_wire import parse_retry_after, server_message
from r1v_data.redact import redact

_TRANSIENT = frozenset({408, 409, 425, 429})  # besides every 5xx


class HttpClient:
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        name: str,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        secret: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.name = name  # the backend's spec, for error messages
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.secret = secret
        self.answered = False  # the server has answered once: later connection errors are transient

    def json(self, method: str, path: str, body: dict[str, Any] | bytes | None = None) -> dict[str, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        raw = self.call(method, path, data, {"Content-Type": "application/json"} if data else {})
        try:
            out = json.loads(raw)
        except ValueError:
            raise BackendError(f"{self.name}: {method} {path} answered with something not JSON") from None
        if not isinstance(out, dict):
            raise BackendError(f"{self.name}: {method} {path} answered with JSON that is not an object")
        return out

    def upload(self, path: str, fields: dict[str, str], filename: str, content: bytes) -> dict[str, Any]:
        """A multipart/form-data POST of `fields` and one file (OpenAI's /files)."""
        boundary = "r1v" + secrets.token_hex(12)
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        body = b"".join([*parts, head, content, f"\r\n--{boundary}--\r\n".encode()])
        raw = self.call("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return json.loads(raw)

    def call(
        self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> bytes:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        last = ""
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(
                url, data=data, method=method, headers={**self.headers, **(headers or {})}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    self.answered = True
                    return resp.read()
            except urllib.error.HTTPError as exc:
                self.answered = True
                raw = exc.read()
                status = exc.code
                message = self._scrub(f"HTTP {status}: {server_message(raw)}")
                if status not in _TRANSIENT and status < 500:
                    raise BackendError(f"{self.name}: {method} {redact(path)} failed: {message}") from None
                wait = parse_retry_after(exc.headers.get("Retry-After"))
                last = message
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if not self.answered and isinstance(reason, OSError) and not isinstance(reason, TimeoutError):
                    # nothing has ever answered here (refused, DNS): a wrong URL, not a blip
                    raise BackendError(
                        f"{self.name}: nothing answers at {self.base_url} ({reason}); check the URL"
                    ) from None
                last, wait = self._scrub(f"cannot reach {self.base_url}: {reason}"), None
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt + 1, wait))
        raise BackendError(
            f"{self.name}: {method} {redact(path)} still failing after {self.max_retries + 1} tries ({last}); "
            "the batches submitted so far are recorded in the store: run the same command again to resume"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))
        return max(delay, retry_after or 0.0)

    def _scrub(self, text: str) -> str:
        return redact(text, self.secret)
