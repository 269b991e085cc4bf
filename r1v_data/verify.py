"""Check a predicted final answer against a reference answer, with a named, versioned verdict.

Cheap rules run in the calling process: option letters for multiple choice, numbers with a
tolerance (units, thousands separators and simple fractions understood), yes/no, and equality of
normalised strings. Everything else (LaTeX expressions, sets, intervals, equations) goes to
math-verify in worker processes with a hard per-call timeout: math-verify's own timeout uses
`signal.alarm`, which works only in a main thread, and without it an input like `9^{9^{9^{9}}}`
never returns. So each worker runs math-verify in its main thread (its own timeouts work there),
and the parent kills and replaces a worker that overruns the hard limit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import re
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib.metadata import version
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, NamedTuple

from r1v_data.traces import answer_letter

__all__ = [
    "VERIFIER_NAME",
    "Verdict",
    "VerifierPool",
    "VerifyRequest",
    "cheap_verdict",
    "parse_number",
]

# Bump RULES_VERSION whenever a rule changes what it accepts: verdicts from different rule sets
# must not be mixed up in a store.
RULES_VERSION = 1
VERIFIER_NAME = f"r1v-verify/{RULES_VERSION}+math-verify-{version('math-verify')}"

VerdictKind = Literal["correct", "wrong", "unverifiable", "error", "timeout"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification, stamped with the verifier that produced it."""

    verdict: VerdictKind
    verifier: str = VERIFIER_NAME
    detail: str | None = None

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


class VerifyRequest(NamedTuple):
    """One (prediction, reference) pair; plain tuples and dicts with these keys work too."""

    pred: str | None
    ref: str | None
    answer_type: str | None = None
    options: Sequence[str] | None = None


# ----------------------------------------------------------------------------- cheap rules
# Unit words: "cm", "nautical miles", "米"; not one letter ("x", "i"). Words are separated by
# spaces so the pattern cannot backtrack exponentially on a long run of letters.
_UNIT_TAIL = re.compile(
    r"(?:\s*[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*|\s*[\u4e00-\u9fff]+)(?:\^?\{?[23]\}?|[²³])?$"
)
_NOT_UNITS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan", "cot", "sec", "csc", "exp"}
_MAX_NUMBER_CHARS = 80  # longer text is no plain number; bounds the regex work too
_SYMBOL_UNITS = re.compile(
    r"(?:\^\s*\{?\\circ\}?|\\circ|°|\\%|%|\\(?:text|mathrm)\{[^{}]*\}(?:\^\{?[23]\}?)?)$"
)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?)\\[dt]?frac(\d)(\d)")
_SLASH = re.compile(r"([+-]?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}


@lru_cache(maxsize=1 << 16)  # pure; references repeat n times per problem in generate
def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number, with units and decoration removed, else None.

    Understands "1,234.5", "$12", "45°", "45^\\circ", "12\\%", "3 cm", "\\frac{1}{2}", "-3/4".
    """
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    s = _strip_math(text)
    for _ in range(3):  # "12 \\text{cm}^2", "45^{\\circ}": peel units until none is left
        before = s
        s = _SYMBOL_UNITS.sub("", s).strip()
        unit = _UNIT_TAIL.search(s)
        if unit and unit.start() > 0 and not _NOT_UNITS & set(unit.group().lower().split()):
            s = s[: unit.start()].strip()
        if s == before:
            break
    s = s.lstrip("$").replace("\\$", "").replace("\\!", "").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    if m := _FRAC.fullmatch(s):
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else m.group(4, 5, 6)
        return _ratio(Fraction(num), Fraction(den), sign == "-")
    if m := _SLASH.fullmatch(s.lstrip("+-")):
        return _ratio(Fraction(m.group(1)), Fraction(m.group(2)), s.startswith("-"))
    return None


def _ratio(num: Fraction, den: Fraction, negative: bool) -> Fraction | None:
    if den == 0:
        return None
    return -num / den if negative else num / den


def _strip_math(text: str) -> str:
    s = text.strip().rstrip(".").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            s = s[len(left) : -len(right)].strip()
    return s.replace("\\left", "").replace("\\right", "").replace("\\,", "").replace("~", " ")


def _close(a: Fraction, b: Fraction) -> bool:
    # Relative 1e-6 for ordinary values, absolute 1e-9 so that 0 compares with 1e-12.
    return abs(a - b) <= max(Fraction(1, 10**9), Fraction(1, 10**6) * max(abs(a), abs(b)))


def _normalise(text: str) -> str:
    s = _strip_math(text).lower()
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", s).rstrip(".")


def _boolean(text: str) -> bool | None:
    words = re.findall(r"[a-z]+", _normalise(text))
    if not words:
        return None
    return True if words[0] in _TRUE else False if words[0] in _FALSE else None


def _option_letter(text: str, options: Sequence[str]) -> str | None:
    """The letter of the one option whose text equals `text` (numbers compared by value)."""
    value, norm = parse_number(text), _normalise(text)
    hits = [
        chr(ord("A") + i)
        for i, opt in enumerate(options)
        if _normalise(opt) == norm or (value is not None and parse_number(opt) == value)
    ]
    return hits[0] if len(hits) == 1 else None


def _choice_verdict(pred: str, ref: str, options: Sequence[str]) -> Verdict | None:
    n = len(options) or 26
    expected = answer_letter(ref, n) or _option_letter(ref, options)
    if expected is None:
        return None  # the reference is not a letter: judge the value instead
    picked = answer_letter(pred, n) or _option_letter(pred, options)
    if picked is None:
        return Verdict("wrong", detail=f"names no option (expected {expected})")
    if picked == expected:
        return Verdict("correct", detail="option letter")
    return Verdict("wrong", detail=f"option {picked}, expected {expected}")


def cheap_verdict(
    pred: str | None,
    ref: str | None,
    answer_type: str | None = None,
    options: Sequence[str] | None = None,
) -> Verdict | None:
    """Judge by the rules that need no math-verify; None when math-verify must decide."""
    if pred is None or not pred.strip():
        return Verdict("wrong", detail="no answer")
    if ref is None or not ref.strip():
        return Verdict("unverifiable", detail="no reference answer")
    if answer_type == "multiple_choice" or options:
        verdict = _choice_verdict(pred, ref, options or ())
        if verdict is not None:
            return verdict
    ref_num = parse_number(ref)
    if ref_num is not None:
        pred_num = parse_number(pred)
        if pred_num is not None:
            ok = _close(pred_num, ref_num)
            return Verdict("correct" if ok else "wrong", detail="numeric")
    ref_bool = _boolean(ref)
    if ref_bool is not None and ref_num is None:
        pred_bool = _boolean(pred)
        ok = pred_bool is ref_bool
        return Verdict("correct" if ok else "wrong", detail="yes/no")
    if _normalise(pred) == _normalise(ref):
        return Verdict("correct", detail="exact")
    return None


def _as_request(item: VerifyRequest | Sequence[Any] | Mapping[str, Any]) -> VerifyRequest:
    if isinstance(item, VerifyRequest):
        return item
    if isinstance(item, Mapping):
        return VerifyRequest(**item)
    return VerifyRequest(*item)


# ----------------------------------------------------------------------------- worker side
def _math(text: str) -> str:
    # math-verify extracts LaTeX from delimiters; a bare extracted answer gets them added.
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
        import math_verify  # noqa: F401  (import before "ready": it is not the first task's time)

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
def _context() -> mp.context.BaseContext:
    # Not "fork": the pool lives inside `generate`, whose process has threads (HTTP clients,
    # progress bars, torch); forking a threaded process can deadlock the child on a lock some
    # other thread held, and forked workers inherit every open descriptor (CUDA, sockets, the
    # other workers' pipes, so a worker would not see EOF when the parent dies). A forkserver
    # child starts clean and cheaply; spawn where forkserver does not exist (Windows).
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    since: float  # when it was started (until ready) or given its task
    ready: bool = False
    task: int | None = None


def _stop(worker: _Worker, graceful: bool) -> None:
    if graceful and worker.process.is_alive():
        try:
            worker.conn.send(None)
            worker.process.join(1.0)
        except (OSError, ValueError):
            pass
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(5.0)  # reap it: no zombie
    with contextlib.suppress(OSError):  # at exit a call in another thread may have closed it
        worker.conn.close()


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
        self._ctx = _context()
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
        return [w.process.pid for w in self._workers if w.process.is_alive()]

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
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self.inner_timeout_s, self.memory_mb),
            name="r1v-verifier",
            daemon=True,  # never outlive the interpreter, even if close() was not called
        )
        process.start()
        child.close()
        return _Worker(process, parent, since=time.monotonic())

    def _replace(self, worker: _Worker) -> None:
        _stop(worker, graceful=False)
        self._workers[self._workers.index(worker)] = self._spawn()

    def _run(self, pending: deque[tuple[int, str, str]], results: list[Verdict | None]) -> None:
        while len(self._workers) < self.n_workers:
            self._workers.append(self._spawn())
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
        handles = [h for w in self._workers for h in (w.conn, w.process.sentinel)]
        ready = set(wait(handles, timeout=max(0.0, deadline - time.monotonic())))
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.conn in ready or worker.process.sentinel in ready:
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
                code = worker.process.exitcode
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
