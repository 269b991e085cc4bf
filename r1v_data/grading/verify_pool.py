"""`VerifierPool`: the verifier's rules in this process, math-verify in worker processes.

math-verify's own timeout uses `signal.alarm`, which works only in a main thread, and without it
an input like `9^{9^{9^{9}}}` never returns. So each worker runs math-verify in its main thread
(its own timeouts work there), and the parent kills and replaces a worker that overruns the hard
limit, recording the verdict "timeout".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from r1v_data.grading.verify import VERIFIER_NAME, Verdict, VerifyRequest, cheap_verdict
from r1v_data.processes import start_helper

__all__ = ["VERIFIER_NAME", "Verdict", "VerifierPool", "VerifyRequest"]


def _as_request(item: VerifyRequest | Sequence[Any] | Mapping[str, Any]) -> VerifyRequest:
    if isinstance(item, VerifyRequest):
        return item
    if isinstance(item, Mapping):
        return VerifyRequest(**item)
    return VerifyRequest(*item)


# ----------------------------------------------------------------------------- worker side
def _math(text: str) -> str:
    # math-verify extracts LaTeX from delimiters; a bare extracted answer gets them added. An
    # answer written "= X" (the end of a derivation) is X: "$=X$" would read as a relation.
    text = text.strip().removeprefix("=").strip()
    return text if "$" in text or "\\boxed" in text else f"${text}$"


class _TimeoutFlag(logging.Handler):
    """math-verify reports its own (signal.alarm) timeouts only as log records: catch them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Timeout"):
            self.fired = True


def _math_verify(pred: str, ref: str, inner_timeout: int | None, flag: _TimeoutFlag) -> tuple[str, str]:
    from math_verify import parse, verify

    flag.fired = False
    gold = parse(_math(ref), parsing_timeout=inner_timeout)
    if not gold:
        return ("timeout" if flag.fired else "wrong"), "reference not parseable; strings differ"
    target = parse(_math(pred), parsing_timeout=inner_timeout)
    ok = bool(target) and verify(gold, target, timeout_seconds=inner_timeout)
    if not ok and flag.fired:
        return "timeout", "math-verify's own timeout"
    return ("correct" if ok else "wrong"), "math-verify"


# One of each kind of answer math-verify meets. Parsed before a worker says it is ready: sympy
# imports much of itself on the first simplify, and the LaTeX parser (ANTLR) builds its prediction
# tables while it parses; cold, the first tasks take several times longer and can run into the
# one-second inner timeout on a busy machine.
_WARM_UP = (
    "(x+1)^2",
    "\\frac{\\sqrt{3}}{2}",
    "(1, 2]",
    "\\{1, 2\\}",
    "y = 2x + 1",
    "\\left( 3, \\frac{\\pi}{2} \\right)",
    "x \\in [0, 1]",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
)


def _warm_up() -> None:
    from math_verify import parse, verify

    for text in _WARM_UP:
        verify(parse(f"${text}$"), parse(f"${text} + 1$"), timeout_seconds=None)


def _worker_main(conn: Connection, inner_timeout: int | None, memory_mb: int | None) -> None:
    """Serve (index, pred, ref) requests until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_mb:
        import resource

        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    flag = _TimeoutFlag()
    mv_log = logging.getLogger("math_verify")
    mv_log.addHandler(flag)
    mv_log.propagate = False  # keep its per-timeout warnings off the user's terminal
    try:
        _warm_up()
        conn.send(("ready", None))
    except Exception as exc:
        conn.send(("ready", f"cannot import math-verify: {exc}"))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent died or closed the pipe
        if msg is None:
            return
        index, pred, ref = msg
        try:
            result = _math_verify(pred, ref, inner_timeout, flag)
        except BaseException as exc:
            result = ("error", f"{type(exc).__name__}: {str(exc)[:200]}")
        conn.send((index, *result))


# ----------------------------------------------------------------------------- the pool
@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    since: float  # when it was started (until ready) or given its task
    ready: bool = False
    task: int | None = None


def _stop(worker: _Worker, graceful: bool) -> None:
    # one still importing math-verify has nothing to finish: waiting would cost its whole start
    if graceful and worker.ready and worker.process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(None)
            _exit_code(worker.process, 1.0)
    if worker.process.poll() is None:
        worker.process.kill()
    _exit_code(worker.process, 5.0)  # reap it: no zombie
    with contextlib.suppress(OSError):  # at exit a call in another thread may have closed it
        worker.conn.close()


def _exit_code(process: subprocess.Popen[bytes], wait_s: float) -> int | None:
    """Its exit status once it has ended, waiting up to `wait_s`; None if it is still running."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(wait_s)
    return process.returncode


def _shutdown(workers: list[_Worker]) -> None:
    for worker in list(workers):
        _stop(worker, graceful=True)
    workers.clear()


_START_TIMEOUT_S = 60.0  # a worker imports math-verify and sympy before it says it is ready
_MAX_START_FAILURES = 3


class VerifierPool:
    """Verify answers in worker processes with a hard per-call timeout.

    Use as a context manager (or call `close`). Workers start on the first call that needs
    math-verify. One caller at a time: concurrent calls from several threads are serialised.

    Args:
        workers: worker processes (default: the usable CPUs, at most 8).
        timeout_s: hard wall-clock limit for one math-verify call; the worker is killed and
            replaced, and the verdict is "timeout".
        inner_timeout_s: math-verify's own per-step timeout inside the worker (whole seconds;
            None disables it). It ends most slow cases without the cost of a new worker.
            Default: a third of `timeout_s`, at least 1.
        memory_mb: address-space limit per worker, so `1000000!` fails alone instead of
            swapping the machine (None: no limit).
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = 5.0,
        *,
        inner_timeout_s: int | Literal["auto"] | None = "auto",
        memory_mb: int | None = 4096,
    ) -> None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.n_workers = workers or max(1, min(usable or 1, 8))
        self.timeout_s = timeout_s
        auto = inner_timeout_s == "auto"
        self.inner_timeout_s = max(1, int(timeout_s / 3)) if auto else inner_timeout_s
        self.memory_mb = memory_mb
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start_failures = 0
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker and wait for it; safe to call twice."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return [w.process.pid for w in self._workers if w.process.poll() is None]

    def verify(
        self,
        pred: str | None,
        ref: str | None,
        answer_type: str | None = None,
        options: Sequence[str] | None = None,
    ) -> Verdict:
        """Verify one answer."""
        return self.verify_many([VerifyRequest(pred, ref, answer_type, options)])[0]

    def verify_many(
        self, items: Iterable[VerifyRequest | Sequence[Any] | Mapping[str, Any]]
    ) -> list[Verdict]:
        """Verify many answers, keeping every worker busy; verdicts come back in input order."""
        requests = [_as_request(item) for item in items]
        results: list[Verdict | None] = [None] * len(requests)
        pending: deque[tuple[int, str, str]] = deque()
        for i, req in enumerate(requests):
            results[i] = cheap_verdict(req.pred, req.ref, req.answer_type, req.options)
            if results[i] is None:
                pending.append((i, str(req.pred), str(req.ref)))
        if pending:
            with self._lock:
                if self._closed:
                    raise RuntimeError("this VerifierPool is closed")
                self._run(pending, results)
        return [r if r is not None else Verdict("error", detail="no verdict") for r in results]

    # -- scheduling ----------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        # a plain interpreter (`start_helper`): nothing of the caller's main script runs again in
        # it, so a script without a `__main__` guard can verify; it exits when its pipe closes
        process, conn = start_helper(f"{__name__}:_worker_main", self.inner_timeout_s, self.memory_mb)
        return _Worker(process, conn, since=time.monotonic())

    def _replace(self, worker: _Worker) -> None:
        _stop(worker, graceful=False)
        self._workers[self._workers.index(worker)] = self._spawn()

    def start(self) -> None:
        """Start the workers now (they import math-verify and warm up in the background) rather
        than on the first call that needs them."""
        while len(self._workers) < self.n_workers:
            self._workers.append(self._spawn())

    def _run(self, pending: deque[tuple[int, str, str]], results: list[Verdict | None]) -> None:
        self.start()
        while pending or any(w.task is not None for w in self._workers):
            if self._start_failures >= _MAX_START_FAILURES:
                while pending:  # a broken environment: say so per item rather than spin
                    index = pending.popleft()[0]
                    results[index] = Verdict("error", detail="verifier workers fail to start")
                continue
            for worker in list(self._workers):
                if worker.ready and worker.task is None and pending:
                    self._dispatch(worker, pending)
            self._wait_and_collect(results)

    def _dispatch(self, worker: _Worker, pending: deque[tuple[int, str, str]]) -> None:
        task = pending.popleft()
        try:
            worker.conn.send(task)
        except (OSError, ValueError):  # it died while idle: no verdict lost, use a new worker
            pending.appendleft(task)
            self._replace(worker)
            return
        worker.task, worker.since = task[0], time.monotonic()

    def _limit(self, worker: _Worker) -> float:
        return worker.since + (self.timeout_s if worker.ready else _START_TIMEOUT_S)

    def _wait_and_collect(self, results: list[Verdict | None]) -> None:
        watched = [w for w in self._workers if w.task is not None or not w.ready]
        deadline = min(map(self._limit, watched), default=time.monotonic() + 1.0)
        # a worker that ends closes its end of the pipe: its connection turns readable (EOF)
        handles = [w.conn for w in self._workers]
        ready = set(wait(handles, timeout=max(0.0, deadline - time.monotonic())))
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.conn in ready:
                self._receive(worker, results)
            elif worker in watched and now >= self._limit(worker):
                if worker.task is not None:
                    detail = f"killed after {self.timeout_s:g} s"
                    results[worker.task] = Verdict("timeout", detail=detail)
                else:
                    self._start_failures += 1
                self._replace(worker)

    def _receive(self, worker: _Worker, results: list[Verdict | None]) -> None:
        try:
            msg = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            msg = None
        if msg is None:  # the process ended: a crash (or the memory limit) is this item's error
            if worker.task is not None:
                code = _exit_code(worker.process, 1.0)
                detail = f"verifier worker died (exit code {code})"
                results[worker.task] = Verdict("error", detail=detail)
            elif not worker.ready:
                self._start_failures += 1
            self._replace(worker)
        elif msg[0] == "ready":
            # A worker without math-verify still serves: each item's verdict names the error.
            worker.ready, self._start_failures = True, 0
        elif msg[0] == worker.task:
            index, verdict, detail = msg
            results[index] = Verdict(verdict, detail=detail)
            worker.task = None
