"""The per-sample Python of the sample scan (`sample_scan`), a batch at a time, in worker
processes when there is enough of it.

Text normalisation, n-grams, MinHash and image phashes cost tens of microseconds a sample in
Python and held the first `filter` run to ~4k samples a second on one core. They are pure
functions of a batch, so `Workers` runs them in worker processes and hands the results back in
submission order, which keeps the scan's files and indexes exactly as one process writes them.
With no workers the same functions run inline.

The workers are plain `python -c` subprocesses fed pickles over their stdin, not a
multiprocessing pool: spawn and forkserver re-run the caller's main script in each child (a
script calling `run_filter` without an `if __name__ == "__main__"` guard hung), and fork copies
a process that holds DuckDB's threads and their locks.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from r1v_data.curation.dedup import exact_digest
from r1v_data.curation.minhash import band_keys, minhash_signatures
from r1v_data.curation.phash import phash64
from r1v_data.errors import R1VError

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
    digests = b"".join(exact_digest(q, s or ()) for q, s in zip(questions, shas, strict=True))
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
# the worker's bootstrap: the parent's import path first, so it imports the parent's r1v_data
_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from r1v_data.curation.scan_work import serve; serve()"
)


def serve() -> None:
    """A worker: the settings, then (task name, batch) -> (ok, result or error) until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the pipes
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else prints goes to stderr, not into the result stream
    source = sys.stdin.buffer
    settings = pickle.load(source)
    while True:
        try:
            name, batch = pickle.load(source)
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, _TASKS[name](settings, *batch))
        except Exception as exc:  # sent back whole, to be raised in the parent
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            pickle.dump(reply, out, protocol=5)
            out.flush()
        except BrokenPipeError:  # the parent gave up on this batch
            return


class Workers:
    """Runs `text_work` / `phash_work` on batches, in `processes` workers or (0) inline."""

    def __init__(self, settings: Settings, processes: int):
        self.settings = settings
        command = [sys.executable, "-c", _BOOT]
        self._procs = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(processes)
        ]
        for proc in self._procs:  # after every start: a big send waits for its worker to boot
            _send(proc, sys.path)
            _send(proc, settings)

    def map(self, fn: Callable[..., Any], batches: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """`fn(settings, *batch)` for each batch, in order. Batch k goes to worker k mod n, one at a
        time each, so no pipe fills while its reader waits on the other one."""
        if not self._procs:
            yield from (fn(self.settings, *b) for b in batches)
            return
        todo, n = iter(batches), len(self._procs)
        sent = sum(_send(p, (fn.__name__, b)) for p, b in zip(self._procs, todo, strict=False))
        got = 0
        while got < sent:
            proc = self._procs[got % n]
            result = _receive(proc)
            got += 1
            if (b := next(todo, None)) is not None:
                sent += _send(proc, (fn.__name__, b))
            yield result

    def close(self) -> None:
        for proc in self._procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()  # an idle worker sees the end of its input and exits
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # abandoned mid-batch (an error or Ctrl-C here)
                proc.kill()
                proc.wait()


def _send(proc: subprocess.Popen[bytes], obj: Any) -> int:
    stdin: IO[bytes] = proc.stdin  # type: ignore[assignment]
    try:
        pickle.dump(obj, stdin, protocol=5)
        stdin.flush()
    except BrokenPipeError:
        raise _exited(proc) from None
    return 1


def _exited(proc: subprocess.Popen[bytes]) -> R1VError:
    return R1VError(f"a sample-check worker process exited (status {proc.wait()}); its error is above")


def _receive(proc: subprocess.Popen[bytes]) -> Any:
    try:
        ok, result = pickle.load(proc.stdout)  # type: ignore[arg-type]
    except EOFError:
        raise _exited(proc) from None
    if not ok:
        raise R1VError(f"a sample-check worker failed: {result}")
    return result


def worker_count(samples: int, batch: int) -> int:
    """Processes for a scan of `samples`: none for a small one, else one per usable core."""
    if samples < MIN_BATCHES * batch:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0
