"""Reading an HTTP/1.x response as its bytes arrive (`ResponseParser`), for `http1.Http1Client`:
the head (status line, header fields, 1xx interim heads skipped, folded lines unfolded, LF-only
lines accepted), then the body by Content-Length, chunked transfer coding or up to the close,
with gzip/deflate content or transfer codings undone. Pure: no sockets, no event loop.

Anything that is not such a response raises `BadResponse`, as early as its bytes show it: another
protocol's greeting from its first bytes, a head, chunk-size line or trailer line past `MAX_HEAD`,
a body past `MAX_BODY`, a chunk longer than its size line says.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

MAX_HEAD = 64 * 1024  # a response head beyond this is not a server's answer we can read
MAX_BODY = 512 * 1024 * 1024  # nor a body beyond this (a completion is kilobytes)
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(Exception):
    """One exchange failed (the base of the errors below)."""


class BadResponse(HttpError):
    """What came back is not an HTTP/1.x response this client can read."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes


class ResponseParser:
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
