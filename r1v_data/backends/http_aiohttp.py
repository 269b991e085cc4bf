"""aiohttp behind `http1.Http1Client`'s interface, for https:// servers (hosted APIs).

The lean client (`http1.py`) serves plain-HTTP servers, where a local vLLM or SGLang answers
hundreds of requests a second and the client's CPU matters. Hosted APIs are paced by their rate
limits, not by the client, and there aiohttp's long record against real TLS front ends is worth
more than its cost. Its exceptions come out as `http1`'s, so the backend handles one set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from r1v_data.backends.http1 import CannotConnect, Disconnected, Response
from r1v_data.backends.openai_wire import exception_reason


class AiohttpClient:
    """POST bodies with one `aiohttp.ClientSession` (made on the running loop at first use)."""

    def __init__(self, headers: Mapping[str, str], *, limit: int = 64, connect_timeout_s: float = 30.0):
        self.headers = dict(headers)
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self._session: Any = None

    async def post(self, url: str, body: bytes) -> Response:
        import aiohttp

        session = self._session or self._open()
        try:
            async with session.post(url, data=body, allow_redirects=False) as resp:
                raw = await resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return Response(resp.status, headers, raw)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise CannotConnect(exception_reason(exc)) from None
        except aiohttp.ClientError as exc:  # disconnected, payload errors, resets
            raise Disconnected(f"{type(exc).__name__}: {exception_reason(exc)}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)
        return self._session
