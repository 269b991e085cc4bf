"""`TraceGrader`: generate's per-result grading (parsing the completion, verifying its answer) in a
process of its own.

Grading costs several times what the HTTP client spends on a request (the repetition check, the
answer rules, math-verify now and then), and in the driver's process it competed for the GIL with
the client's event loop thread: at 50 ms and 64 requests in flight `generate` reached 0.6-0.9 of
the bare client. Here the driver only pickles completions over a pipe and reads back their fields;
the grading runs on another core. Requests go in order and replies come back in order, so the
driver can keep several in the pipe (`TraceBlock` keeps up to `DEPTH`) while it waits for the
next result. The child writes nothing: if the driver dies, the child sees its pipe close and exits.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import signal
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from r1v_data.errors import R1VError
from r1v_data.grading.verify_pool import VerifierPool, start_context

log = logging.getLogger(__name__)

# completions in the pipe before the driver waits for the oldest one's grade: enough that a slow
# grade (math-verify's first call, a long trace) does not stop the driver refilling the client's
# free slots (at 8 the client sat idle behind it: 0.6 of the bare client's rate at 50 ms / 64)
DEPTH = 64
BATCH = 16  # completions (or grades) in one message at most, sent while the other side is busy

# the fields a grade fills in a trace row, in the order `_grade` returns them
GRADE_FIELDS = ("think", "answer", "think_closed", "truncated", "repetition", "verdict", "verifier")


class TraceGrader:
    """One grading process, started on first use; use as a context manager (or call `close`).

    Completions and grades cross the pipe in batches: while the process is busy, new completions
    wait here (up to `BATCH`), and it answers everything it has graded in one message, so under
    load each side wakes the other once per batch rather than once per completion."""

    def __init__(self, verify_timeout_s: float = 5.0):
        self.verify_timeout_s = verify_timeout_s
        self._process: Any = None
        self._conn: Connection | None = None
        self._poller: select.poll | None = None
        self._held: list[tuple] = []  # submitted, not sent yet
        self._sent = 0  # sent, grade not received yet
        self._grades: deque[tuple] = deque()  # received, not handed out yet

    def submit(self, text: str, finish_reason: str | None, prefix: str, sample: dict[str, Any]) -> None:
        """Queue one completion to be graded against its sample's reference answer."""
        self.start()
        problem = (sample.get("answer"), sample.get("answer_type"), sample.get("options"))
        self._held.append((text, finish_reason, prefix, problem))
        if not self._sent or len(self._held) >= BATCH:  # an idle grader starts at once
            self._send_held()

    def receive(self) -> dict[str, Any]:
        """The grade of the oldest completion submitted and not yet received."""
        assert self._conn is not None, "receive() before submit()"
        if not self._grades:
            self._send_held()
            self._read()
        return dict(zip(GRADE_FIELDS, self._grades.popleft(), strict=True))

    def has_reply(self) -> bool:
        """Whether `receive` would return at once."""
        if not self._grades and self._poller is not None and self._poller.poll(0):
            self._read()
        if not self._sent and self._held:
            self._send_held()
        return bool(self._grades)

    def _send_held(self) -> None:
        if self._held:
            assert self._conn is not None
            self._conn.send(self._held)
            self._sent += len(self._held)
            self._held = []

    def _read(self) -> None:
        assert self._conn is not None
        try:
            grades = self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            raise R1VError(
                f"the trace grading process stopped (exit code {code}); re-run generate (finished "
                "traces are kept). A script that calls run_generate needs `if __name__ == '__main__':`"
            ) from None
        self._sent -= len(grades)
        self._grades.extend(grades)

    def close(self) -> None:
        conn, process, self._conn, self._process, self._poller = self._conn, self._process, None, None, None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)

    def __enter__(self) -> TraceGrader:
        self.start()  # it and its verifier warm up while the first requests are in flight
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the grading process (if it is not running yet)."""
        if self._conn is not None:
            return
        ctx = start_context()
        parent, child = ctx.Pipe(duplex=True)
        # not a daemon: its verifier pool starts worker processes of its own
        process = ctx.Process(target=_serve, args=(child, self.verify_timeout_s), name="r1v-grader")
        try:
            process.start()
        finally:
            child.close()
        self._process, self._conn = process, parent
        self._poller = select.poll()
        self._poller.register(parent.fileno(), select.POLLIN)


def _serve(conn: Connection, verify_timeout_s: float) -> None:
    """Grade completions until told to stop or the driver goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    inbox: queue.SimpleQueue[list[tuple] | None] = queue.SimpleQueue()
    # Completions are read off the pipe by a thread of their own: were the grades sent from the
    # thread that also reads, a driver sending while the replies it has not read yet fill the
    # pipe's other way (a few long traces do) would wait for this process, and this one for it.
    threading.Thread(target=_read_all, args=(conn, inbox), name="r1v-grader-inbox", daemon=True).start()
    with VerifierPool(workers=1, timeout_s=verify_timeout_s) as verifier:
        verifier.start()  # math-verify imports while the first completions are still on their way
        while (batch := inbox.get()) is not None:
            grades = [_grade(verifier, *item) for item in batch]
            while len(grades) < BATCH and not inbox.empty():  # what came meanwhile goes along
                if (more := inbox.get()) is None:
                    inbox.put(None)  # the stop comes after these grades are sent
                    break
                grades.extend(_grade(verifier, *item) for item in more)
            try:
                conn.send(grades)
            except (BrokenPipeError, OSError):
                return


def _read_all(conn: Connection, inbox: queue.SimpleQueue[list[tuple] | None]) -> None:
    """Move what the driver sends into `inbox`; None when it says stop or goes away."""
    try:
        while (msg := conn.recv()) is not None:
            inbox.put(msg)
    except (EOFError, OSError):
        pass
    inbox.put(None)


def _grade(
    verifier: VerifierPool, text: str, finish_reason: str | None, prefix: str, problem: tuple
) -> tuple:
    from r1v_data.grading.traces import parse_completion

    answer, answer_type, options = problem
    try:
        parsed = parse_completion(
            text, finish_reason, assistant_prefix=prefix, options=options, answer_type=answer_type
        )
        verdict = verifier.verify(parsed.answer, answer, answer_type, options)
    except Exception as exc:  # a bug in one grade must not stop the run: the row says so
        log.error("grading a completion failed: %s: %s", type(exc).__name__, exc)
        return (None, None, None, None, None, "error", None)
    return (
        parsed.think,
        parsed.answer,
        parsed.think_closed,
        parsed.truncated,
        parsed.repetition,
        verdict.verdict,
        verdict.verifier,
    )
