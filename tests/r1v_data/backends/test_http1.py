"""The lean HTTP/1.1 client against a real local TCP server that answers with scripted bytes:
every way a body can be framed, delivered whole or a byte at a time; keep-alive and its end;
servers that close, break off or answer garbage; timeouts; the request as it goes out."""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from r1v_data.backends import http1_parse
from r1v_data.backends.http1 import BadResponse, CannotConnect, Disconnected, Http1Client, split_url


@dataclass
class Step:
    """One answer: the bytes written (in pieces of `piece` bytes), then maybe the close."""

    raw: bytes
    close: bool = False
    piece: int = 0  # 0: in one write
    delay_s: float = 0.0
    reset: bool = False  # end with a TCP reset instead of a close
    hold_s: float = 0.0  # then keep the connection open this long, saying nothing


@dataclass
class ScriptedServer:
    """Reads each request (head, then Content-Length bytes) and answers with the next step."""

    steps: list[Step]
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.steps:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(v for k, v in _fields(head) if k == "content-length"))
                self.requests.append((head, await reader.readexactly(length)))
                step = self.steps.pop(0)
                await asyncio.sleep(step.delay_s)
                for i in range(0, len(step.raw), step.piece or len(step.raw) or 1):
                    writer.write(step.raw[i : i + (step.piece or len(step.raw))])
                    await writer.drain()
                await asyncio.sleep(step.hold_s)
                if step.reset:
                    linger = struct.pack("ii", 1, 0)  # SO_LINGER 0: close sends RST
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    writer.transport.abort()
                    return
                if step.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _fields(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


def served(
    steps: list[Step], body: Callable[[Http1Client, str], Awaitable[object]]
) -> tuple[object, ScriptedServer]:
    """Run `body(client, url)` against a server answering with `steps`."""
    server = ScriptedServer(list(steps))

    async def main() -> object:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        client = Http1Client({"Content-Type": "application/json"}, limit=4)
        try:
            return await body(client, f"http://127.0.0.1:{port}/v1/chat/completions")
        finally:
            await client.close()
            listening.close()

    return asyncio.run(main()), server


def post_n(n: int) -> Callable[[Http1Client, str], Awaitable[list]]:
    async def body(client: Http1Client, url: str) -> list:
        return [await client.post(url, b'{"i": %d}' % i) for i in range(n)]

    return body


PAYLOAD = b'{"choices": [{"message": {"content": "' + b"x" * 3000 + b'"}}]}'


def _chunked(data: bytes, size: int) -> bytes:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


FRAMINGS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAYLOAD) + PAYLOAD,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(PAYLOAD, 700),
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    % len(gzip.compress(PAYLOAD))
    + gzip.compress(PAYLOAD),
    "deflate (zlib)": b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _chunked(zlib.compress(PAYLOAD), 100),
    "deflate (raw)": b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
    % len(zlib.compress(PAYLOAD)[2:-4])
    + zlib.compress(PAYLOAD)[2:-4],
    "100 continue first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
    % len(PAYLOAD)
    + PAYLOAD,
    "gzip in several members": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    % len(gzip.compress(PAYLOAD[:100]) + gzip.compress(PAYLOAD[100:]))
    + gzip.compress(PAYLOAD[:100])
    + gzip.compress(PAYLOAD[100:]),
    "transfer coding gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    + _chunked(gzip.compress(PAYLOAD), 300),
    "folded header, LF-only lines": b"HTTP/1.1 200 OK\nX-Long: a\n  b\nContent-Length: %d\n\n" % len(PAYLOAD)
    + PAYLOAD,
}


@pytest.mark.parametrize("piece", [0, 1, 7], ids=["one write", "byte by byte", "7 bytes at a time"])
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_body_framed_any_way_comes_back_whole_and_the_connection_is_reused(
    framing: str, piece: int
) -> None:
    steps = [Step(FRAMINGS[framing], piece=piece) for _ in range(3)]
    responses, server = served(steps, post_n(3))
    assert [(r.status, r.body) for r in responses] == [(200, PAYLOAD)] * 3
    assert server.connections == 1  # keep-alive: three exchanges on one connection


def test_a_body_read_up_to_the_close_ends_its_connection() -> None:
    step = Step(b"HTTP/1.1 200 OK\r\n\r\n" + PAYLOAD, close=True)
    responses, server = served([step, step], post_n(2))
    assert [r.body for r in responses] == [PAYLOAD] * 2
    assert server.connections == 2


@pytest.mark.parametrize(
    "head, reused",
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", True),
        (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\n", True),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_header(head: bytes, reused: bool) -> None:
    # the server keeps the socket open either way: only the client's reading of the head decides
    step = Step(head + b"Content-Length: 2\r\n\r\nok")
    responses, server = served([step, step, step], post_n(3))
    assert [r.body for r in responses] == [b"ok"] * 3
    assert server.connections == (1 if reused else 3)


def test_more_bytes_than_announced_make_the_connection_unusable() -> None:
    step = Step(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")
    responses, server = served([step, step], post_n(2))
    assert [r.body for r in responses] == [b"ok"] * 2
    assert server.connections == 2


def test_no_body_for_204_and_headers_are_read_case_blind_and_joined() -> None:
    head = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nx-a: 2\r\nRetry-After: 3\r\n\r\n"
    (response,), _ = served([Step(head)], post_n(1))
    assert (response.status, response.body) == (204, b"")
    assert response.headers["x-a"] == "1, 2" and response.headers["retry-after"] == "3"


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    # answered, then closed without saying so (as a server's keep-alive timeout does)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def body(client: Http1Client, url: str) -> list:
        first = await client.post(url, b"1")
        await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        return [first, await client.post(url, b"2")]

    responses, server = served([Step(ok, close=True), Step(ok)], body)
    assert [r.body for r in responses] == [b"ok", b"ok"]
    assert [b for _, b in server.requests] == [b"1", b"2"]
    assert server.connections == 2


def test_a_new_connection_closed_without_an_answer_is_not_retried_here() -> None:
    async def body(client: Http1Client, url: str) -> Disconnected:
        with pytest.raises(Disconnected) as caught:
            await client.post(url, b"1")
        return caught.value

    error, server = served([Step(b"", close=True)], body)
    assert "closed the connection" in str(error)
    assert len(server.requests) == 1  # the caller's retry policy decides what comes next


def test_a_response_broken_off_is_disconnected() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"

    async def body(client: Http1Client, url: str) -> Disconnected:
        with pytest.raises(Disconnected) as caught:
            await client.post(url, b"1")
        return caught.value

    error, server = served([Step(cut, close=True)], body)
    assert isinstance(error, Disconnected) and len(server.requests) == 1


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n", "no end of the response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length that is not one number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "not one number"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "chunk size that is not hexadecimal",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nok", "does not read: 'br'"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok", "does not decompress"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "without a colon"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            "longer than its size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            "not hexadecimal",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 70_000, "chunk size line longer"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"a" * 70_000,
            "trailer line longer",
        ),
    ],
)
def test_what_is_not_a_readable_response_is_a_bad_response(raw: bytes, says: str) -> None:
    async def body(client: Http1Client, url: str) -> BadResponse:
        with pytest.raises(BadResponse) as caught:
            await client.post(url, b"1")
        return caught.value

    error, _ = served([Step(raw)], body)
    assert says in str(error)


def test_a_timed_out_exchange_closes_its_connection() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def body(client: Http1Client, url: str) -> bytes:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.post(url, b"slow")
        return (await client.post(url, b"next")).body  # its late answer must not be read as this one

    late, server = served(
        [Step(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate", delay_s=0.3), Step(ok)], body
    )
    assert late == b"ok"
    assert server.connections == 2


def test_the_request_goes_out_as_http_1_1_with_its_host_length_and_headers() -> None:
    async def body(client: Http1Client, url: str) -> None:
        await client.post(url + "?a=1", b'{"x": "\xc3\xa9"}')

    _, server = served([Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")], body)
    head, sent = server.requests[0]
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "POST /v1/chat/completions?a=1 HTTP/1.1"
    fields = dict(_fields(head))
    assert fields["host"].startswith("127.0.0.1:")
    assert fields["content-type"] == "application/json" and fields["user-agent"] == "r1v-data"
    assert fields["content-length"] == str(len(sent)) and sent == b'{"x": "\xc3\xa9"}'


def test_nothing_listening_is_cannot_connect() -> None:
    async def main() -> None:
        listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        listening.close()
        await listening.wait_closed()
        with pytest.raises(CannotConnect):
            await Http1Client({}).post(f"http://127.0.0.1:{port}/v1", b"{}")

    asyncio.run(main())


def test_a_header_holding_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        Http1Client({"Authorization": "Bearer k\r\nX-Injected: 1"})


@pytest.mark.parametrize(
    "url, origin, target",
    [
        ("http://h/v1/chat", ("h", 80, "h"), "/v1/chat"),
        ("http://h:80/x?y=1", ("h", 80, "h"), "/x?y=1"),
        ("http://h:8000", ("h", 8000, "h:8000"), "/"),
        ("http://[::1]:8000/v1", ("::1", 8000, "[::1]:8000"), "/v1"),
    ],
)
def test_urls_split_into_where_to_connect_and_what_to_ask(url: str, origin: tuple, target: str) -> None:
    where, asked, user = split_url(url)
    assert (where.host, where.port, where.host_header) == origin and asked == target and user is None


@pytest.mark.parametrize("url", ["https://h/v1", "ftp://h/v1", "http:///v1"])
def test_only_plain_http_urls_are_taken(url: str) -> None:
    with pytest.raises(ValueError, match="not an http:// URL"):
        split_url(url)


def test_a_response_beyond_the_size_cap_is_a_bad_response(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1_parse, "MAX_BODY", 4096)  # the real cap is 512 MB

    async def body(client: Http1Client, url: str) -> BadResponse:
        with pytest.raises(BadResponse, match="a response of more than"):
            await client.post(url, b"1")

    served([Step(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 10_000, close=True)], body)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b"x" * 10_000, 100)
    served([Step(chunked, close=True)], body)  # chunks taken out of the buffer still count


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/1.1"])
def test_the_standard_library_http_server_is_understood_either_version(protocol: str) -> None:
    """Another server's idea of HTTP: http.server answers HTTP/1.0 without a length (the body ends
    with the connection) or HTTP/1.1 with one, and keeps the connection only then."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = protocol

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            if protocol == "HTTP/1.1":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"

    async def main() -> list[bytes]:
        client = Http1Client({"Content-Type": "application/json"})
        try:
            return [(await client.post(url, b'{"n": %d}' % i)).body for i in range(4)]
        finally:
            await client.close()

    try:
        assert asyncio.run(main()) == [b'{"n": %d}' % i for i in range(4)]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "greeting", [b"SSH-2.0-OpenSSH_9.6\r\n", b"220 mail.example.com ESMTP\r\n", b"\x16\x03\x01"]
)
def test_another_protocols_greeting_is_a_bad_response_at_once(greeting: bytes) -> None:
    """A line-based service never sends the blank line that ends an HTTP head: its first bytes
    must be enough (here it then holds the connection open, saying nothing more)."""

    async def body(client: Http1Client, url: str) -> None:
        async with asyncio.timeout(5):
            with pytest.raises(BadResponse, match=r"not an HTTP/1\.x response"):
                await client.post(url, b"1")

    served([Step(greeting, hold_s=30)], body)


def test_a_reset_while_a_body_is_read_to_the_close_is_no_response() -> None:
    cut = b"HTTP/1.1 200 OK\r\n\r\n" + PAYLOAD[:40]

    async def body(client: Http1Client, url: str) -> Disconnected:
        with pytest.raises(Disconnected) as caught:
            await client.post(url, b"1")
        return caught.value

    error, _ = served([Step(cut, hold_s=0.05, reset=True)], body)
    assert "reset" in str(error).lower()  # not the 40 bytes before the reset as a whole response


def test_a_gzip_empty_body_is_empty() -> None:
    (response,), _ = served(
        [Step(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n")], post_n(1)
    )
    assert (response.status, response.body) == (200, b"")


def test_a_urls_user_and_password_go_as_basic_authorization_unless_one_is_given() -> None:
    ok = Step(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def with_userinfo(client: Http1Client, url: str) -> None:
        await client.post(url.replace("http://", "http://al%40ice:s3cret@"), b"1")

    _, server = served([ok], with_userinfo)
    fields = dict(_fields(server.requests[0][0]))
    assert fields["authorization"] == "Basic " + base64.b64encode(b"al@ice:s3cret").decode()
    assert "al%40ice" not in fields["host"]

    async def given(client: Http1Client, url: str) -> None:
        client = Http1Client({"Authorization": "Bearer k"})
        try:
            await client.post(url.replace("http://", "http://u:p@"), b"1")
        finally:
            await client.close()

    _, server = served([ok], given)
    assert dict(_fields(server.requests[0][0]))["authorization"] == "Bearer k"
