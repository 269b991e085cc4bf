"""The per-sample Python of the sample scan (`sample_scan`), a batch at a time, in worker
processes when there is enough of it.

Text normalisation, n-grams, MinHash and image phashes cost tens of microseconds a sample in
Python and held the first `filter` run to ~4k samples a second on one core. They are pure
functions of a batch, so `Workers` runs them in worker processes and hands the results back in
submission order, which keeps the scan's files and indexes exactly as one process writes them.
With no workers the same functions run inline.

The workers are plain interpreters (`processes.start_helper`), not a multiprocessing pool: spawn
and forkserver re-run the caller's main script in each child (a script calling `run_filter`
without an `if __name__ == "__main__"` guard hung), and fork copies a process that holds DuckDB's
threads and their locks.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from r1v_data.curation.dedup import exact_digests
from r1v_data.curation.minhash import band_keys, minhash_signatures
from r1v_data.curation.phash import phash64
from r1v_data.errors import R1VError
from r1v_data.processes import start_helper, stop_helper

MIN_BATCHES = 4  # fewer batches than this are not worth starting processes for (~1 s each)
MAX_WORKERS = 4


@dataclass(frozen=True)
class Settings:
    """What every text batch is checked against; sent to each worker once."""

    benchmarks: Sequence[Any]
    lsh: tuple[int, int]  # (bands, rows per band)
    num_perm: int


@dataclass
class TextResult:
    """What one batch of questions leaves for the scan."""

    digests: np.ndarray  # (n, 2) uint64, `dedup.exact_digest`
    signatures: np.ndarray  # (n, num_perm) uint32
    keys: np.ndarray  # (bands, n) uint64 LSH keys
    hits: list[tuple[int, str]]  # (index in the batch, contamination reason)


def text_work(
    settings: Settings, questions: list[str], shas: list[Any], hashes: list[list[int]]
) -> TextResult:
    """Exact-dedup digests, MinHash signatures and band keys, and contamination hits of a batch."""
    digests = exact_digests(questions, shas)
    sig = minhash_signatures(questions, num_perm=settings.num_perm)
    return TextResult(np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2), sig, band_keys(sig, *settings.lsh),
                      _contaminated(settings.benchmarks, questions, hashes))  # fmt: skip


def _contaminated(
    benchmarks: Sequence[Any], questions: list[str], hashes: list[list[int]]
) -> list[tuple[int, str]]:
    if not benchmarks:
        return []
    from r1v_data.curation.decontam import check_all

    hits = check_all(benchmarks, questions, hashes)
    return [(i, hit.reason) for i, hit in enumerate(hits) if hit is not None]


def phash_work(_: Settings, images: list[list[bytes]]) -> list[list[int]]:
    """The phash64 of every image of each sample of a batch."""
    return [[phash64(b) for b in sample] for sample in images]


_TASKS: dict[str, Callable[..., Any]] = {"text_work": text_work, "phash_work": phash_work}


def serve(conn: Connection) -> None:
    """A worker (`processes.start_helper` runs it): the settings, then (task name, batch) ->
    (ok, result or error) until the parent sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the pipe
    try:
        settings = conn.recv()
    except (EOFError, OSError):
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        name, batch = msg
        try:
            reply: tuple[bool, Any] = (True, _TASKS[name](settings, *batch))
        except Exception as exc:  # sent back whole, to be raised in the parent
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:  # the parent gave up on this batch
            return


class Workers:
    """Runs `text_work` / `phash_work` on batches, in `processes` workers or (0) inline."""

    def __init__(self, settings: Settings, processes: int):
        self.settings = settings
        self._helpers = [start_helper(f"{__name__}:serve") for _ in range(processes)]
        for helper in self._helpers:  # after every start: a big send waits for its worker to boot
            _send(helper, settings)

    def map(self, fn: Callable[..., Any], batches: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """`fn(settings, *batch)` for each batch, in order. Batch k goes to worker k mod n, one at a
        time each, so no pipe fills while its reader waits on the other one."""
        if not self._helpers:
            yield from (fn(self.settings, *b) for b in batches)
            return
        todo, n = iter(batches), len(self._helpers)
        sent = sum(_send(h, (fn.__name__, b)) for h, b in zip(self._helpers, todo, strict=False))
        got = 0
        while got < sent:
            helper = self._helpers[got % n]
            result = _receive(helper)
            got += 1
            if (b := next(todo, None)) is not None:
                sent += _send(helper, (fn.__name__, b))
            yield result

    def close(self) -> None:
        for process, conn in self._helpers:
            stop_helper(process, conn, timeout_s=5)  # one abandoned mid-batch is killed


_Helper = tuple[subprocess.Popen[bytes], Connection]


def _send(helper: _Helper, obj: Any) -> int:
    try:
        helper[1].send(obj)
    except OSError:
        raise _exited(helper[0]) from None
    return 1


def _exited(proc: subprocess.Popen[bytes]) -> R1VError:
    return R1VError(f"a sample-check worker process exited (status {proc.wait()}); its error is above")


def _receive(helper: _Helper) -> Any:
    try:
        ok, result = helper[1].recv()
    except (EOFError, OSError):
        raise _exited(helper[0]) from None
    if not ok:
        raise R1VError(f"a sample-check worker failed: {result}")
    return result


def worker_count(samples: int, batch: int) -> int:
    """Processes for a scan of `samples`: none for a small one, else one per usable core."""
    if samples < MIN_BATCHES * batch:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0
