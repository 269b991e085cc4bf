"""`TraceGrader`: generate's per-result grading (parsing the completion, verifying its answer) in a
process of its own.

Grading costs several times what the HTTP client spends on a request (the repetition check, the
answer rules, math-verify now and then), and in the driver's process it competed for the GIL with
the client's event loop thread: at 50 ms and 64 requests in flight `generate` reached 0.6-0.9 of
the bare client. Here the driver only pickles completions over a pipe and reads back their fields;
the grading runs on another core. Most answers are settled by the verifier's rules at once; those
that need math-verify wait for it in a thread of their own, so a slow one (math-verify's cold
start, a hard expression) holds back only itself: grades come back in the order they are made,
each with the key it was submitted with. The driver keeps up to `DEPTH` in the pipe while it
waits for the next result. The child writes nothing: if the driver dies, the child sees its pipe
close and exits.
"""

from __future__ import annotations

import logging
import queue
import select
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Hashable
from multiprocessing.connection import Connection
from typing import Any

from r1v_data.errors import R1VError
from r1v_data.grading.verify import Verdict, cheap_verdict
from r1v_data.grading.verify_pool import VerifierPool
from r1v_data.processes import start_helper, stop_helper

log = logging.getLogger(__name__)

# completions in the pipe before the driver waits for the oldest one's grade: enough that a slow
# grade (math-verify's first call, a long trace) does not stop the driver refilling the client's
# free slots (at 8 the client sat idle behind it: 0.6 of the bare client's rate at 50 ms / 64)
DEPTH = 64
BATCH = 16  # completions (or grades) in one message at most, sent while the other side is busy

# distinct (answer, reference) verdicts a grading process remembers: a problem's samples mostly
# give the same few answers, and math-verify takes milliseconds to reach a verdict again
KNOWN_VERDICTS = 65_536
# verdicts that hold whenever the same answer meets the same reference (not a timeout or error)
_SETTLED = frozenset({"correct", "wrong", "unverifiable"})

# the fields a grade fills in a trace row, in the order `_grade` returns them
GRADE_FIELDS = ("think", "answer", "think_closed", "truncated", "repetition", "verdict", "verifier")


class TraceGrader:
    """One grading process, started on first use; use as a context manager (or call `close`).

    Completions and grades cross the pipe in batches: while the process is busy, new completions
    wait here (up to `BATCH`), and it answers everything it has graded in one message, so under
    load each side wakes the other once per batch rather than once per completion."""

    def __init__(self, verify_timeout_s: float = 5.0):
        self.verify_timeout_s = verify_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._poller: select.poll | None = None
        self._held: list[tuple] = []  # submitted, not sent yet
        self._sent = 0  # sent, grade not received yet
        self._grades: deque[tuple[Hashable, tuple]] = deque()  # received, not handed out yet

    def submit(
        self, key: Hashable, text: str, finish_reason: str | None, prefix: str, sample: dict[str, Any]
    ) -> None:
        """Queue one completion to be graded against its sample's reference answer; its grade
        comes back from `receive` with `key`."""
        self.start()
        problem = (sample.get("answer"), sample.get("answer_type"), sample.get("options"))
        self._held.append((key, text, finish_reason, prefix, problem))
        if not self._sent or len(self._held) >= BATCH:  # an idle grader starts at once
            self._send_held()

    def receive(self) -> tuple[Hashable, dict[str, Any]]:
        """The key and grade of a completion submitted and not yet received (the first graded)."""
        assert self._conn is not None, "receive() before submit()"
        if not self._grades:
            self._send_held()
            self._read()
        key, grade = self._grades.popleft()
        return key, dict(zip(GRADE_FIELDS, grade, strict=True))

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
            code = self._process.poll() if self._process is not None else None
            raise R1VError(
                f"the trace grading process stopped (exit code {code}); re-run generate (finished "
                "traces are kept)"
            ) from None
        self._sent -= len(grades)
        self._grades.extend(grades)

    def close(self) -> None:
        process, conn, self._process, self._conn, self._poller = self._process, self._conn, None, None, None
        stop_helper(process, conn)

    def __enter__(self) -> TraceGrader:
        self.start()  # it imports while the first requests are in flight
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the grading process (if it is not running yet)."""
        if self._conn is not None:
            return
        self._process, self._conn = start_helper(f"{__name__}:serve", self.verify_timeout_s)
        self._poller = select.poll()
        self._poller.register(self._conn.fileno(), select.POLLIN)


class InlineGrader:
    """`TraceGrader`'s interface, its work done in the calling thread: for a driver whose HTTP
    client runs in a process of its own, nothing else in this process waits for the GIL, and
    grading here spares a process, the pickling both ways and a pipe's wake-ups per batch. Answers
    only math-verify can judge wait for it in a thread (its worker is a process), holding back no
    other grade."""

    def __init__(self, verify_timeout_s: float = 5.0):
        self.verify_timeout_s = verify_timeout_s
        self._ready: deque[tuple[Hashable, tuple]] = deque()  # graded, not handed out yet
        self._hard: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()  # for math-verify
        self._verified: queue.SimpleQueue[tuple] = queue.SimpleQueue()  # ("graded", key, grade)
        self._known: dict[tuple, Verdict] = {}
        self._waiting = 0  # submitted to math-verify, not collected yet
        self._verifier: VerifierPool | None = None
        self._thread: threading.Thread | None = None

    def submit(
        self, key: Hashable, text: str, finish_reason: str | None, prefix: str, sample: dict[str, Any]
    ) -> None:
        problem = (sample.get("answer"), sample.get("answer_type"), sample.get("options"))
        before = len(self._ready)
        _first_look((key, text, finish_reason, prefix, problem), self._ready, self._hard, self._known)
        if len(self._ready) == before:
            self._waiting += 1
            self._start_verifier()

    def receive(self) -> tuple[Hashable, dict[str, Any]]:
        if not self._ready:
            assert self._waiting, "receive() with nothing submitted"
            self._collect(self._verified.get())
        key, grade = self._ready.popleft()
        return key, dict(zip(GRADE_FIELDS, grade, strict=True))

    def has_reply(self) -> bool:
        while self._waiting and not self._verified.empty():
            self._collect(self._verified.get_nowait())
        return bool(self._ready)

    def _collect(self, graded: tuple) -> None:
        self._ready.append(graded[1:])
        self._waiting -= 1

    def _start_verifier(self) -> None:
        if self._verifier is None:  # math-verify starts with the first answer only it can judge
            self._verifier = VerifierPool(workers=1, timeout_s=self.verify_timeout_s)
            args = (self._verifier, self._hard, self._verified, self._known)
            self._thread = threading.Thread(
                target=_verify_all, args=args, name="r1v-grader-verify", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        verifier, thread, self._verifier, self._thread = self._verifier, self._thread, None, None
        if thread is not None:
            self._hard.put(None)
            thread.join(timeout=2 * self.verify_timeout_s + 10)
        if verifier is not None:
            verifier.close()

    def __enter__(self) -> InlineGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(conn: Connection, verify_timeout_s: float) -> None:
    """The grading process (`start_helper` runs it): grade completions until told to stop or the
    driver goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    # ("grade", completions) from the driver, ("graded", key, grade) from math-verify, None: stop
    inbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
    hard: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()  # what math-verify must decide
    # Completions are read off the pipe by a thread of their own: were the grades sent from the
    # thread that also reads, a driver sending while the replies it has not read yet fill the
    # pipe's other way (a few long traces do) would wait for this process, and this one for it.
    _daemon(_read_all, conn, inbox)
    known: dict[tuple, Verdict] = {}  # verdicts reached, by `_problem_key`
    # math-verify starts with the first answer only it can judge (its import and warm-up cost
    # seconds of CPU, which a run whose answers the rules settle never pays); meanwhile that answer
    # waits alone, as every answer waiting for math-verify does
    with VerifierPool(workers=1, timeout_s=verify_timeout_s) as verifier:
        _daemon(_verify_all, verifier, hard, inbox, known)
        try:
            _answer(conn, inbox, hard, known)
        finally:
            hard.put(None)


def _daemon(target: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=target, args=args, name=f"r1v-grader-{target.__name__}", daemon=True).start()


def _answer(
    conn: Connection,
    inbox: queue.SimpleQueue[tuple | None],
    hard: queue.SimpleQueue,
    known: dict[tuple, Verdict],
) -> None:
    """Send back every grade made, a batch per message: what came in meanwhile goes along."""
    while (msg := inbox.get()) is not None:
        grades: list[tuple[Hashable, tuple]] = []
        while True:
            if msg[0] == "graded":
                grades.append(msg[1:])
            for item in msg[1] if msg[0] == "grade" else ():
                _first_look(item, grades, hard, known)
            if len(grades) >= BATCH or inbox.empty():
                break
            if (msg := inbox.get()) is None:
                inbox.put(None)  # the stop comes after these grades are sent
                break
        if grades:
            try:
                conn.send(grades)
            except (BrokenPipeError, OSError):
                return


def _read_all(conn: Connection, inbox: queue.SimpleQueue[tuple | None]) -> None:
    """Move what the driver sends into `inbox`; None when it says stop or goes away."""
    try:
        while (msg := conn.recv()) is not None:
            inbox.put(("grade", msg))
    except (EOFError, OSError):
        pass
    inbox.put(None)


def _first_look(
    item: tuple,
    grades: list[tuple[Hashable, tuple]] | deque[tuple[Hashable, tuple]],
    hard: queue.SimpleQueue,
    known: dict[tuple, Verdict],
) -> None:
    """Parse a completion and judge it by a verdict reached before or by the verifier's rules: its
    grade goes to `grades`, or the completion to `hard` when only math-verify can decide."""
    from r1v_data.grading.traces import parse_completion

    key, text, finish_reason, prefix, (answer, answer_type, options) = item
    try:
        parsed = parse_completion(
            text, finish_reason, assistant_prefix=prefix, options=options, answer_type=answer_type
        )
        problem = _problem_key(parsed.answer, answer, answer_type, options)
        verdict = known.get(problem) or _remember(known, problem, cheap_verdict(*problem))
    except Exception as exc:  # a bug in one grade must not stop the run: the row says so
        log.error("grading a completion failed: %s: %s", type(exc).__name__, exc)
        grades.append((key, _FAILED))
        return
    if verdict is None:
        hard.put((key, parsed, answer, answer_type, options))
    else:
        grades.append((key, _fields(parsed, verdict)))


def _verify_all(
    verifier: VerifierPool, hard: queue.SimpleQueue, inbox: queue.SimpleQueue, known: dict[tuple, Verdict]
) -> None:
    """Ask math-verify, one answer at a time: the same answer queued again behind the first finds
    its verdict known by then."""
    while (item := hard.get()) is not None:
        key, parsed, answer, answer_type, options = item
        problem = _problem_key(parsed.answer, answer, answer_type, options)
        try:
            verdict = known.get(problem) or _remember(known, problem, verifier.verify(*problem))
            grade = _fields(parsed, verdict)
        except Exception as exc:
            log.error("verifying an answer failed: %s: %s", type(exc).__name__, exc)
            grade = _FAILED
        inbox.put(("graded", key, grade))


def _problem_key(answer: str | None, reference: Any, answer_type: Any, options: Any) -> tuple:
    """What a verdict depends on, hashable: `cheap_verdict`'s and `verify`'s arguments."""
    return (answer, reference, answer_type, tuple(options) if options else None)


def _remember(known: dict[tuple, Verdict], problem: tuple, verdict: Verdict | None) -> Verdict | None:
    if verdict is not None and verdict.verdict in _SETTLED:
        if len(known) >= KNOWN_VERDICTS:
            known.clear()  # a run with this many distinct answers gains little from the rest
        known[problem] = verdict
    return verdict


_FAILED = (None, None, None, None, None, "error", None)  # the grade of a completion grading failed on


def _fields(parsed: Any, verdict: Verdict) -> tuple:
    return (
        parsed.think,
        parsed.answer,
        parsed.think_closed,
        parsed.truncated,
        parsed.repetition,
        verdict.verdict,
        verdict.verifier,
    )
