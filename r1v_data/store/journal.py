"""Per-result durability: an append-only journal beside a `PartWriter`'s buffer.

A `JournaledPartWriter` appends every group of rows to `TABLE/.journal-RUN-SEQ.jsonl` before the
rows count as done, and removes that file right after the buffer became `part-RUN-SEQ.parquet`.
So a SIGKILL loses nothing that was acknowledged: the kernel keeps what `write` handed it when the
process dies (no fsync per record: that would cost a disk flush per result; parts are fsynced
as before, so a power cut can still lose the records since the last part).

On the next open by the lock holder (`fold_journals`, from `Store._tidy`) a journal becomes the
part it was going to be, under the same name. That makes the fold exactly-once without comparing
request ids: if `part-RUN-SEQ` exists its buffer reached disk and the journal is merely deleted;
otherwise the journal's records are written as that part, then the journal is deleted. A record
is one line (one group: a sample's rows never split); a torn last line (no newline, or not JSON)
is a write the kill cut short, and is ignored.
"""

from __future__ import annotations

import base64
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from r1v_data.store import registry, schema
from r1v_data.store.parts import PartWriter, write_parquet_atomic

PREFIX, SUFFIX = ".journal-", ".jsonl"


def journal_path(folder: Path, run_id: str, seq: int) -> Path:
    # the part it becomes is part-RUN-SEQ.parquet (`Store.write_part`'s name)
    return folder / f"{PREFIX}{run_id}-{seq:05d}{SUFFIX}"


class Journal:
    """One append-only file of JSON lines, opened on the first append."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def append(self, rows: list[dict[str, Any]]) -> None:
        line = _RECORDS_JSON.encode(rows).encode() + b"\n"
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        view = memoryview(line)
        while view:  # a short write (a full disk) is finished, or raises
            view = view[os.write(self._fd, view) :]

    def remove(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


class JournaledPartWriter(PartWriter):
    """A `PartWriter` whose rows are durable as soon as `add_group` returns (see the module).

    Since the journal already holds them, a full buffer is written as its part behind the caller's
    back, in a thread (Parquet encoding and fsync release the GIL), one part at a time and in
    order; an explicit `flush()` waits for that and returns with every row in a part."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._journal: Journal | None = None
        self._behind: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def add_group(self, rows: list[dict[str, Any]], size_hint: int = 0) -> None:
        if self._full(len(rows), size_hint):
            # wait for the part before taking the rows: a Ctrl-C lands in this wait, and then the
            # rows were neither written nor counted (after taking them it would write uncounted rows)
            self._wait()
        if self._journal is None:  # the buffer becomes part SEQ+1 when it is written
            folder = self.store.root / self.table_name
            self._journal = Journal(journal_path(folder, self.run_id, self._seq + 1))
        self._journal.append(rows)
        self._rows.extend(rows)
        self._bytes += size_hint
        if self._full():
            self._write_behind()

    def flush(self) -> None:
        self._wait()
        if self._rows:
            self._write(*self._take())
        self._last_flush = time.monotonic()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            super().__exit__(exc_type, *rest)
        finally:
            if self._behind is not None:
                self._behind.shutdown(wait=True)

    def _full(self, more_rows: int = 0, more_bytes: int = 0) -> bool:
        return (
            len(self._rows) + more_rows >= self.flush_rows
            or self._bytes + more_bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def _write_behind(self) -> None:
        self._wait()  # one part at a time: parts land in order and memory stays bounded
        for writer in self.after:
            writer.flush()
        if self._behind is None:
            self._behind = ThreadPoolExecutor(1, thread_name_prefix=f"r1v-{self.table_name}-parts")
        self._writing = self._behind.submit(self._write, *self._take())
        self._last_flush = time.monotonic()

    def _take(self) -> tuple[list[dict[str, Any]], int, Journal]:
        assert self._journal is not None
        taken = self._rows, self._seq + 1, self._journal
        self._rows, self._bytes, self._seq, self._journal = [], 0, self._seq + 1, None
        return taken

    def _write(self, rows: list[dict[str, Any]], seq: int, journal: Journal) -> None:
        self.store.write_part(self.table_name, rows, self.run_id, seq)
        journal.remove()  # the part is in place before its journal goes

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()  # a failed write raises here, in the caller's thread


def fold_journals(root: Path) -> list[Path]:
    """Turn every table's leftover journals into their parts (the lock holder only); the parts
    written."""
    written = []
    for table in schema.STORE_TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"{PREFIX}*{SUFFIX}")):
            part = _fold(path, table)
            if part is not None:
                written.append(part)
    return written


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a journal, in order; a torn last line is left out."""
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes().split(b"\n")[:-1]:  # the piece after the last newline is torn
        try:
            rows.extend(json.loads(line, object_hook=_decode))
        except ValueError:
            break  # only the last record can be torn; nothing after it was acknowledged
    return rows


def _fold(path: Path, table: str) -> Path | None:
    run_id, seq = path.name[len(PREFIX) : -len(SUFFIX)].rsplit("-", 1)
    part = path.with_name(f"part-{run_id}-{seq}.parquet")
    rows = [] if part.exists() else read_records(path)  # the part exists: the journal is spent
    if rows:
        write_parquet_atomic(registry.part_metadata(schema.conform(rows, table), part.name, run_id), part)
    path.unlink()
    return part if rows else None


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, bytes | bytearray):
        return {"$b": base64.b64encode(value).decode()}
    raise TypeError(f"a journal record cannot hold {type(value).__name__}")


# made once: `json.dumps` with options builds an encoder on every call (once per result here)
_RECORDS_JSON = json.JSONEncoder(default=_encode, separators=(",", ":"))


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$t" in obj:
            return datetime.fromisoformat(obj["$t"])
        if "$b" in obj:
            return base64.b64decode(obj["$b"])
    return obj
