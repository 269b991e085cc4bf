"""The provider-neutral batch state machine behind `openai-batch:` and `anthropic-batch:`:

    spool → split → submit → record → poll → collect → resubmit the requests with no result

`generate()` takes the stage's requests (those with no trace in the store yet). A request that
a recorded batch already holds is not sent again: that batch is polled (or, when it ended,
its results are read again: providers keep them for weeks). The others are written to a spool
file, split to the provider's limits (requests and bytes per batch), submitted, and each batch is
recorded before any poll. Then every batch is polled until it ends and its results are yielded,
matched by `custom_id` = the request id. Requests a batch left without a result (it expired, or
some lines were cancelled) go into a new batch, at most `max_resubmits` times per run; per-request
errors are results (a 4xx is `rejected`, anything else `error`, which a later run sends again).

With `wait=False` the backend submits, collects what has already finished, and raises
`BatchesPending`: the rest is collected by a later run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from r1v_data.backends.base import BatchesPending, GenRequest, GenResult
from r1v_data.backends.batch.adapter import Adapter, BatchInfo
from r1v_data.backends.batch.ledger import BatchRecord, Ledger, StoreLedger

if TYPE_CHECKING:
    from r1v_data.store import Store

Status = Callable[[str], None]


class Spool:
    """Batch input lines on disk (a run's requests may hold gigabytes of images), by request id."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="r1v-batch-", suffix=".jsonl")
        self.file = os.fdopen(fd, "w+b")
        os.unlink(self.path)  # gone with the process, whatever happens to it
        self.where: dict[str, tuple[int, int]] = {}

    def add(self, rid: str, line: bytes) -> None:
        self.file.seek(0, os.SEEK_END)
        self.where[rid] = (self.file.tell(), len(line))
        self.file.write(line)

    def lines(self, rids: Iterable[str]) -> list[bytes]:
        out = []
        for rid in rids:
            offset, size = self.where[rid]
            self.file.seek(offset)
            out.append(self.file.read(size))
        return out

    def close(self) -> None:
        self.file.close()


def split(rids: list[str], sizes: dict[str, int], max_requests: int, max_bytes: int) -> list[list[str]]:
    """`rids` in order, cut into chunks of at most `max_requests` lines and `max_bytes` bytes."""
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for rid in rids:
        if current and (len(current) >= max_requests or used + sizes[rid] > max_bytes):
            chunks.append(current)
            current, used = [], 0
        current.append(rid)
        used += sizes[rid]
    return [*chunks, current] if current else chunks


class BatchBackend:
    """A `Backend` over a provider's batch API (see the module docstring)."""

    supports_images = True

    def __init__(
        self,
        adapter: Adapter,
        *,
        spec: str,
        poll_interval_s: float = 30.0,
        wait: bool = True,
        max_resubmits: int = 3,
    ):
        self.adapter = adapter
        self.spec = spec
        self.identity = adapter.identity
        self.prefills = adapter.prefills
        self.poll_interval_s = float(poll_interval_s)
        self.wait = bool(wait)
        self.max_resubmits = int(max_resubmits)
        self.ledger: Ledger = Ledger()
        self.on_status: Status | None = None  # a stage's progress line, told what the batches do
        self.submitted: list[str] = []  # keys of the batches this backend submitted (for tests, reports)

    def __repr__(self) -> str:
        return f"BatchBackend({self.spec!r})"

    def use_store(self, store: Store, run_id: str) -> None:
        """Record batches in `store` (and resume those recorded there) under `run_id`."""
        self.ledger = StoreLedger(store, run_id, self.identity)

    def render(self, request: GenRequest) -> str:
        return self.adapter.render(request)

    def close(self) -> None:
        pass

    def generate(self, requests: Iterable[GenRequest]) -> Iterator[GenResult]:
        collect = _Collect(self)
        try:
            collect.plan(requests)
            yield from collect.run()
        finally:
            collect.spool.close()


class _Collect:
    """One `generate()` call: its spool, the batches it waits on, what it has yielded."""

    def __init__(self, backend: BatchBackend):
        self.b = backend
        self.spool = Spool()
        self.prefixes: dict[str, str] = {}
        self.waiting: dict[str, set[str]] = {}  # batch key → the requests of this call it holds
        self.infos: dict[str, BatchInfo] = {}
        self.resubmits: Counter[str] = Counter()
        self.total = self.yielded = 0
        self.start = time.monotonic()

    def plan(self, requests: Iterable[GenRequest]) -> None:
        holder = self.b.ledger.latest_batch_of()
        new: list[str] = []
        sizes: dict[str, int] = {}
        for req in requests:
            rid = req.request_id
            line = self.b.adapter.line(req)
            self.spool.add(rid, line)
            sizes[rid] = len(line)
            self.prefixes[rid] = req.assistant_prefix if self.b.prefills else ""
            self.total += 1
            if rid in holder:
                self.waiting.setdefault(holder[rid], set()).add(rid)
            else:
                new.append(rid)
        for chunk in split(new, sizes, self.b.adapter.max_requests, self.b.adapter.max_bytes):
            self.submit(chunk, attempt=1)

    def submit(self, rids: list[str], attempt: int, detail: str | None = None) -> None:
        a = self.b.adapter
        batch_id, file_id = a.submit(self.spool.lines(rids))
        record = BatchRecord(a.provider, batch_id, self.b.identity, tuple(rids), attempt, a.url, file_id,
                             detail=detail)  # fmt: skip
        self.b.ledger.add(record)  # before any poll: a kill from here on resumes this batch
        self.b.submitted.append(record.key)
        self.waiting[record.key] = set(rids)

    def run(self) -> Iterator[GenResult]:
        while self.waiting:
            for key in list(self.waiting):
                yield from self.poll(key)
            if not self.waiting:
                break
            self.report()
            if not self.b.wait:
                states = Counter(self.infos[k].state for k in self.waiting if k in self.infos)
                pending = sum(len(v) for v in self.waiting.values())
                raise BatchesPending(pending, len(self.waiting), dict(states))
            time.sleep(self.b.poll_interval_s)

    def poll(self, key: str) -> Iterator[GenResult]:
        record = self.b.ledger.records[key]
        info = self.infos[key] = self.b.adapter.retrieve(record.batch_id)
        if not info.terminal:
            return
        rids = self.waiting.pop(key)
        results = 0
        for item in self.b.adapter.results(record.batch_id, info, self.prefixes):
            if isinstance(item, str):  # a line that never ran: left in `rids`
                continue
            results += 1
            if item.request_id in rids:
                rids.discard(item.request_id)
                self.yielded += 1
                yield item
        missing = sorted(rids)  # never ran, or no line at all
        if record.event != "collected":
            self.b.ledger.update(key, event="collected", state=info.state, results=results,
                                 missing=len(missing), detail=info.counts or info.error)  # fmt: skip
        yield from self.after_missing(record, info, missing)

    def after_missing(self, record: BatchRecord, info: BatchInfo, missing: list[str]) -> Iterator[GenResult]:
        """Resubmit what the batch left without a result, or give those requests up for this run."""
        if not missing:
            return
        # a batch a person cancelled, or that failed, is not resubmitted in the run that sees it end;
        # a later run (record already collected) sends its requests again
        resubmit = info.resubmit or record.event == "collected"
        again = [r for r in missing if self.resubmits[r] < self.b.max_resubmits] if resubmit else []
        for rid in again:
            self.resubmits[rid] += 1
        if again:
            why = f"resubmits {len(again)} requests {record.batch_id} left without a result ({info.state})"
            limits = self.b.adapter
            sizes = {rid: self.spool.where[rid][1] for rid in again}
            for chunk in split(again, sizes, limits.max_requests, limits.max_bytes):
                self.submit(chunk, record.attempt + 1, why)
        given_up = sorted(set(missing) - set(again))
        reason = info.error or f"batch {record.batch_id} ended {info.state} without a result for it"
        for rid in given_up:
            self.yielded += 1
            yield GenResult(rid, finish_reason="error", error=reason)

    def report(self) -> None:
        if self.b.on_status is None:
            return
        states = Counter(self.infos[k].state if k in self.infos else "submitted" for k in self.waiting)
        done = sum(self.infos[k].done for k in self.waiting if k in self.infos)
        total = sum(self.infos[k].total for k in self.waiting if k in self.infos)
        elapsed = _duration(time.monotonic() - self.start)
        parts = [", ".join(f"{n} {s}" for s, n in sorted(states.items())) + " batches",
                 f"{self.yielded}/{self.total} collected", f"provider {done}/{total}", elapsed]  # fmt: skip
        self.b.on_status(" · ".join(parts))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def options_for_batch(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split teacher options into the state machine's and the adapter's."""
    mine = {k: options.pop(k) for k in ("poll_interval_s", "wait", "max_resubmits") if k in options}
    return mine, options
