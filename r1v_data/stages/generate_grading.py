"""`TraceGrader`: generate's per-result grading (parsing the completion, verifying its answer) in a
process of its own.

Grading costs several times what the HTTP client spends on a request (the repetition check, the
answer rules, math-verify now and then), and in the driver's process it competed for the GIL with
the client's event loop thread: at 50 ms and 64 requests in flight `generate` reached 0.6-0.9 of
the bare client. Here the driver only pickles a completion over a pipe and reads back its fields;
the grading runs on another core. Requests go in order and replies come back in order, so the
driver can keep a few in the pipe (`TraceBlock` keeps up to `DEPTH`) while it waits for the next
result. The child writes nothing: if the driver dies, the child sees its pipe close and exits.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
from multiprocessing.connection import Connection
from typing import Any

from r1v_data.errors import R1VError
from r1v_data.grading.verify_pool import VerifierPool, start_context

log = logging.getLogger(__name__)

DEPTH = 8  # completions in the pipe before the driver waits for the oldest one's grade

# the fields a grade fills in a trace row, in the order `_grade` returns them
GRADE_FIELDS = ("think", "answer", "think_closed", "truncated", "repetition", "verdict", "verifier")


class TraceGrader:
    """One grading process, started on first use; use as a context manager (or call `close`)."""

    def __init__(self, verify_timeout_s: float = 5.0):
        self.verify_timeout_s = verify_timeout_s
        self._process: Any = None
        self._conn: Connection | None = None
        self._poller: select.poll | None = None

    def submit(self, text: str, finish_reason: str | None, prefix: str, sample: dict[str, Any]) -> None:
        """Send one completion to be graded against its sample's reference answer."""
        if self._conn is None:
            self._start()
        assert self._conn is not None
        problem = (sample.get("answer"), sample.get("answer_type"), sample.get("options"))
        self._conn.send((text, finish_reason, prefix, problem))

    def receive(self) -> dict[str, Any]:
        """The grade of the oldest completion submitted and not yet received."""
        assert self._conn is not None, "receive() before submit()"
        try:
            return dict(zip(GRADE_FIELDS, self._conn.recv(), strict=True))
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            raise R1VError(
                f"the trace grading process stopped (exit code {code}); re-run generate (finished "
                "traces are kept). A script that calls run_generate needs `if __name__ == '__main__':`"
            ) from None

    def has_reply(self) -> bool:
        # one poll object, made once: Connection.poll() builds a selector per call, which cost
        # more than the grade's round trip
        return self._poller is not None and bool(self._poller.poll(0))

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
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
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
    with VerifierPool(workers=1, timeout_s=verify_timeout_s) as verifier:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            try:
                conn.send(_grade(verifier, *msg))
            except (BrokenPipeError, OSError):
                return


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
