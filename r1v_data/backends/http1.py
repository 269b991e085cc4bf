"""A lean HTTP/1.1 client for the generation loop: keep-alive connections, one POST at a time on
each, its response read whole.

Why not aiohttp here: at 50 ms and 64 requests in flight, the client process took ~620 us of CPU a
request with aiohttp (its request and response objects, header multidicts, tracing hooks, timers,
the stream between its parser and the caller) and ~320 us with this client. A POST whose body is
already encoded and whose response is read whole needs none of that: `Http1Client` writes the
request in one call and parses the response in the protocol's `data_received` as it arrives.

What it does: plain HTTP/1.1 (https:// goes to aiohttp, `http_aiohttp.py`), keep-alive with at
most `limit` idle connections per server; bodies by Content-Length, chunked transfer coding, or
up to the close; gzip/deflate (content or transfer codings) if a server sends them unasked; 1xx
interim responses skipped; folded header lines unfolded; a URL's `user:password@` sent as Basic
authorization (as aiohttp does). A connection the server closed while it sat idle is not reused;
one that breaks as a request goes out is the caller's to retry (with its backoff: the server may
have been working on it). What it does not do: TLS, proxies, redirects (a 3xx comes back as it
is, for the caller to report), cookies, HTTP/2.

Errors: `CannotConnect` (no connection: refused, DNS, connect timeout), `Disconnected` (the
connection closed or broke before the whole response), `BadResponse` (not HTTP/1.x, too big a head
or body). A timeout is the caller's (`asyncio.timeout` around `post`); a cancelled exchange's
connection is closed, never reused.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from r1v_data.backends.http1_parse import BadResponse, HttpError, Response, ResponseParser

__all__ = [
    "BadResponse",
    "CannotConnect",
    "Disconnected",
    "Http1Client",
    "HttpError",
    "Response",
    "split_url",
]


class CannotConnect(HttpError):
    """No connection could be opened (refused, DNS, connect timeout)."""


class Disconnected(HttpError):
    """The connection closed or broke before the whole response had arrived."""


class Origin(NamedTuple):
    """Where a URL's requests go: host, port, and the Host header's value."""

    host: str
    port: int
    host_header: str


def split_url(url: str) -> tuple[Origin, str, str | None]:
    """The origin, the request target (path and query) and the `user:password` (if any) of an
    http:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    port, host = parts.port or 80, parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == 80 else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    user = None if parts.username is None else f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return Origin(host, port, host_header), target, user


class Http1Client:
    """POST bodies to http:// URLs over keep-alive connections (on the running event loop)."""

    def __init__(self, headers: Mapping[str, str], *, limit: int = 64, connect_timeout_s: float = 30.0):
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n"):
                raise ValueError(f"header {name!r} holds a line break")
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        given = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host")}
        if not any(k.lower() == "user-agent" for k in given):  # some proxies refuse a request without
            given["User-Agent"] = "r1v-data"
        self._authorized = any(k.lower() == "authorization" for k in given)
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in given.items())
        self._idle: dict[Origin, list[_Connection]] = {}
        self._targets: dict[str, tuple[Origin, bytes]] = {}  # url -> origin, request head up to its length

    async def post(self, url: str, body: bytes) -> Response:
        origin, head = self._target(url)
        request = head + b"%d\r\n\r\n" % len(body) + body
        conn = self._take_idle(origin) or await self._connect(origin)
        return await self._exchange(conn, origin, request)

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _target(self, url: str) -> tuple[Origin, bytes]:
        known = self._targets.get(url)
        if known is None:
            origin, target, user = split_url(url)
            head = f"POST {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n{self._fixed_headers}"
            if user is not None and not self._authorized:
                head += f"Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
            known = self._targets[url] = (origin, (head + "Content-Length: ").encode("latin-1"))
        return known

    def _take_idle(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if conn.open and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
        return None

    async def _exchange(self, conn: _Connection, origin: Origin, request: bytes) -> Response:
        try:
            response, reusable = await conn.exchange(request)
        except BaseException:  # failed, timed out or cancelled: what is left on it is unreadable
            conn.close()
            raise
        idle = self._idle.setdefault(origin, [])
        if reusable and conn.open and len(idle) < self.limit:
            idle.append(conn)
        else:
            conn.close()
        return response

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, origin.host, origin.port)
        except TimeoutError:
            raise CannotConnect(f"no connection within {self.connect_timeout_s:g}s") from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror)
            raise CannotConnect(str(exc).strip() or type(exc).__name__) from None
        return conn


class _Connection(asyncio.Protocol):
    """One connection: a request written, its response parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[tuple[Response, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Send `request`; its response, and whether the connection may carry another."""
        assert self.transport is not None
        self._parser = ResponseParser()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = self._parser = None

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # bytes nobody asked for: unusable now
            self.close()
            return
        try:
            done = self._parser.feed(data)  # type: ignore[union-attr]
        except BadResponse as exc:
            self._waiter.set_exception(exc)
            self.close()
            return
        if done is not None:
            self._waiter.set_result(done)

    def eof_received(self) -> None:
        self.open = False  # the server is done with it: no request goes out on it any more
        # returning None closes the transport; `connection_lost` then ends a response read to the close

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter, parser = self._waiter, self._parser
        if waiter is None or waiter.done() or parser is None:
            return
        try:
            done = None if exc is not None else parser.at_close()  # a reset is no end of a body
        except BadResponse as bad:
            waiter.set_exception(bad)
            return
        if done is not None:
            waiter.set_result(done)
        else:
            reason = str(exc).strip() if exc else "the server closed the connection"
            waiter.set_exception(Disconnected(reason or type(exc).__name__))

    def close(self) -> None:
        self.open = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
