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
import re
import zlib
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

MAX_HEAD = 64 * 1024  # a response head beyond this is not a server's answer we can read
MAX_BODY = 512 * 1024 * 1024  # nor a body beyond this (a completion is kilobytes)
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(Exception):
    """One exchange failed (the base of the errors below)."""


class CannotConnect(HttpError):
    """No connection could be opened (refused, DNS, connect timeout)."""


class Disconnected(HttpError):
    """The connection closed or broke before the whole response had arrived."""


class BadResponse(HttpError):
    """What came back is not an HTTP/1.x response this client can read."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes


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
        self._parser: _ResponseParser | None = None
        self._waiter: asyncio.Future[tuple[Response, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Send `request`; its response, and whether the connection may carry another."""
        assert self.transport is not None
        self._parser = _ResponseParser()
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


class _ResponseParser:
    """An HTTP/1.x response, fed as its bytes arrive."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.received = 0  # bytes fed so far (a chunked body's are taken out of `buf` as they come)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.length: int | None = None  # the body's length; None: chunked or up to the close
        self.chunked = False
        self.codings: list[str] = []  # transfer codings besides chunked, in the order applied
        self.chunks = _Chunks()

    def feed(self, data: bytes) -> tuple[Response, bool] | None:
        """The response and whether the connection is reusable, once it is whole."""
        self.buf += data
        self.received += len(data)
        if self.received > MAX_BODY:
            raise BadResponse(f"a response of more than {MAX_BODY >> 20} MB")
        while not self.status and self._read_head():
            pass
        if not self.status:
            return None
        if self.chunked:
            if not self.chunks.feed(self.buf):
                return None
            return self._finish(self.chunks.body, reusable=not self.buf)
        if self.length is not None and len(self.buf) >= self.length:
            extra = len(self.buf) > self.length  # more than was announced: the next reply is garbled
            return self._finish(bytes(self.buf[: self.length]), reusable=not extra)
        return None

    def at_close(self) -> tuple[Response, bool] | None:
        """The response if the connection's close ends it (a body read up to the close)."""
        if self.status and self.length is None and not self.chunked:
            return self._finish(bytes(self.buf), reusable=False)
        return None

    def _read_head(self) -> bool:
        """Parse a head if a whole one is buffered (True); a 1xx head is dropped and read past."""
        if not self.buf.startswith(b"HTTP/"[: len(self.buf)]):  # another protocol's port says so at once
            raise BadResponse(f"not an HTTP/1.x response: {bytes(self.buf[:80])!r}")
        end, sep = _head_end(self.buf)
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                raise BadResponse(f"no end of the response head within {MAX_HEAD} bytes")
            return False
        # not str.splitlines: a header value may hold \x85 or \x0c
        lines = bytes(self.buf[:end]).decode("latin-1").replace("\r\n", "\n").split("\n")
        del self.buf[: end + sep]
        version, status = _status_line(lines[0])
        if 100 <= status < 200:
            return True  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.status, self.headers = status, _header_fields(lines[1:])
        self._frame(version)
        return False

    def _frame(self, version: str) -> None:
        """How the body is delimited, and whether the connection survives it."""
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        codings = _codings(self.headers.get("transfer-encoding"))
        if self.status in (204, 304):
            self.length = 0
        elif codings and codings[-1] == "chunked":
            self.chunked = True
            self.codings = codings[:-1]  # applied before the chunking (`gzip, chunked`)
        elif codings:
            self.keep_alive = False  # not chunked last: the body ends with the connection (RFC 9112)
            self.codings = codings
        elif "content-length" in self.headers:
            self.length = _content_length(self.headers["content-length"])
        else:
            self.keep_alive = False  # the body ends with the connection

    def _finish(self, body: bytes, reusable: bool) -> tuple[Response, bool]:
        # the content codings were applied first, then the transfer codings: undone the other way
        for coding in reversed([*_codings(self.headers.get("content-encoding")), *self.codings]):
            body = _decoded(body, coding)
        return Response(self.status, self.headers, body), reusable and self.keep_alive


class _Chunks:
    """A chunked body, read from the front of the buffer as chunks complete."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size: int | None = None  # the chunk being read; None: its size line is next
        self.trailers = False

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    def feed(self, buf: bytearray) -> bool:
        """Consume what `buf` holds; True once the last chunk and the trailers are read."""
        while True:
            if self.trailers:
                return self._read_trailers(buf)
            if self.size is None:
                end = _line_end(buf, "chunk size line")
                if end < 0:
                    return False
                self.size = _chunk_size(bytes(buf[:end]))
                del buf[: end + 2]
                self.trailers = self.size == 0
                continue
            if len(buf) < self.size + 2:
                return False
            if buf[self.size : self.size + 2] != b"\r\n":
                raise BadResponse("a chunk longer than its size line says")
            self.parts.append(bytes(buf[: self.size]))
            del buf[: self.size + 2]
            self.size = None

    @staticmethod
    def _read_trailers(buf: bytearray) -> bool:
        """Drop trailer lines up to the empty one (True once it is read)."""
        while (end := _line_end(buf, "trailer line")) >= 0:
            del buf[: end + 2]
            if end == 0:
                return True
        return False


def _codings(value: str | None) -> list[str]:
    """The codings a Transfer-Encoding or Content-Encoding header lists, in the order applied."""
    return [c for c in (c.strip() for c in value.lower().split(",")) if c] if value else []


def _line_end(buf: bytearray, what: str) -> int:
    """Where the line at the front of `buf` ends (-1: not yet); a line past MAX_HEAD is refused."""
    end = buf.find(b"\r\n", 0, MAX_HEAD + 2)
    if end < 0 and len(buf) > MAX_HEAD:
        raise BadResponse(f"a {what} longer than {MAX_HEAD} bytes")
    return end


def _head_end(buf: bytearray) -> tuple[int, int]:
    """Where a head ends and its blank line's length: CRLF CRLF, or LF LF from a server that ends
    lines with LF alone (RFC 9112 lets a client accept those); (-1, 0) if not yet."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    bare = buf.find(b"\n\n", 0, end if end >= 0 else MAX_HEAD + 4)  # only in the head: a CRLF head has none
    if bare >= 0:
        return bare, 2
    return (end, 4) if end >= 0 else (-1, 0)


def _status_line(line: str) -> tuple[str, int]:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise BadResponse(f"not an HTTP/1.x response: {line[:80]!r}")
    return version, int(code)


def _header_fields(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = ""
    for line in lines:
        if line[:1] in (" ", "\t") and name:  # an obsolete folded line: it continues the last value
            headers[name] = f"{headers[name]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadResponse(f"a header line without a colon: {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _content_length(value: str) -> int:
    first = value.split(",")[0].strip()  # a repeated header joined: the copies must agree
    if not first.isdigit() or any(v.strip() != first for v in value.split(",")):
        raise BadResponse(f"a Content-Length that is not one number: {value[:40]!r}")
    return int(first)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(text):  # not int(x, 16)'s wider idea: no 0x, sign or underscores
        raise BadResponse(f"a chunk size that is not hexadecimal: {line[:40]!r}")
    return int(text, 16)


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body with a coding the server applied unasked undone."""
    if encoding in ("", "identity") or not body:
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadResponse(f"a body in an encoding this client does not read: {encoding!r}")
    # 47: a gzip or zlib header; -15: raw deflate, which some servers send as "deflate"
    for wbits in (47, -15) if encoding == "deflate" else (47,):
        try:
            return _decompress(body, wbits)
        except zlib.error:
            pass
    raise BadResponse(f"a {encoding} body that does not decompress")


def _decompress(body: bytes, wbits: int) -> bytes:
    """Every member of a body (gzip allows several, one after another)."""
    out = []
    while body:
        member = zlib.decompressobj(wbits)
        out.append(member.decompress(body))
        if not member.eof:
            raise zlib.error("truncated")
        body = member.unused_data
    return b"".join(out)
