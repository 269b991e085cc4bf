"""`ClientProcess`: an HTTP backend's client loop in a process of its own.

At 50 ms and 64 requests in flight the client's event loop needs most of a core, and in the
driver's process it shared one GIL with everything `generate` does per result (request ids,
the journal, rows, the grader's pipe): every time the driver took the GIL the loop waited, and
`generate` reached 0.5-0.9 of the bare client. Here the driver only encodes request bodies and
hands them over a pipe, a batch at a time; the child process sends them, keeps `concurrency` in
flight, and hands back every result it has in one message.

The driver keeps up to twice `concurrency` requests with the child, so the child always has the
next requests at hand when a slot frees. The child does everything on one event loop in one
thread (reading requests, the HTTP exchanges, writing results back), so no thread of its own
waits for another's turn on the GIL. The child is a plain interpreter (`processes.start_helper`)
in a session of its own, so Ctrl-C reaches only the driver; it exits when the driver closes the
pipe or dies. A generation stopped early closes the child, and the next one starts a new child.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

from r1v_data.backends.base import BackendError, GenResult
from r1v_data.processes import start_helper, stop_helper
from r1v_data.redact import redact


class Served(Protocol):
    """What the child needs of the backend it runs (picklable: it is sent to the child)."""

    spec: str
    concurrency: int

    async def serve(self, conn: Connection) -> None: ...


class ClientProcess:
    """One child process running `backend.serve`, started on first use."""

    def __init__(self, backend: Served):
        self.backend = backend
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def generate(self, items: Iterable[tuple[Any, Any]], proven: bool) -> Iterator[GenResult]:
        """Send each (request, encoded body) and yield its result, in the order results come (the
        request as the backend's `serve` reads it, with its `request_id`)."""
        conn = self.start()
        conn.send(("proven", proven))
        window = 2 * self.backend.concurrency
        pending = Pending(iter(items), lambda batch: conn.send(("requests", batch)))
        try:
            while True:
                pending.top_up(window)
                if not pending.outstanding:
                    return
                results = self._receive()
                pending.outstanding -= len(results)
                # the child's free slots are refilled before the caller works through these
                # results (grading, rows, the journal: most of a millisecond each); topped up only
                # after them, a batch of results left the child that long without requests
                pending.top_up(window)
                for item in results:
                    if isinstance(item, BackendError):
                        raise item
                    yield item
        finally:
            if pending.outstanding:  # stopped early: what the child still has goes with it
                self.close()

    def close(self) -> None:
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        stop_helper(process, conn)

    def start(self) -> Connection:
        """Start the child (if it is not running); the driver's end of its pipe."""
        if self._conn is None:
            self._process, self._conn = start_helper(f"{__name__}:serve", self.backend)
        return self._conn

    def _receive(self) -> list[GenResult | BackendError]:
        assert self._conn is not None
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._process.poll() if self._process is not None else None
            self.close()
            raise BackendError(
                f"{redact(self.backend.spec)}: the HTTP client process stopped (exit code {code}); "
                "re-run (finished requests are kept)"
            ) from None


class Pending:
    """The requests not yet handed to the client loop (`hand` takes a batch of them), and how many
    it holds unanswered."""

    def __init__(self, items: Iterator[Any], hand: Callable[[list[Any]], None]):
        self.items = items
        self.hand = hand
        self.outstanding = 0
        self.exhausted = False

    def top_up(self, window: int) -> None:
        """Hand the loop requests until it holds `window` (in flight and waiting there)."""
        batch: list[Any] = []
        while not self.exhausted and self.outstanding + len(batch) < window:
            try:
                batch.append(next(self.items))
            except StopIteration:
                self.exhausted = True
        if batch:
            self.hand(batch)
            self.outstanding += len(batch)


def serve(conn: Connection, backend: Served) -> None:
    """The client process (`start_helper` runs it): `backend.serve` until the driver stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    asyncio.run(backend.serve(conn))
