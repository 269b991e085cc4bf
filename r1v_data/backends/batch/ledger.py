"""Where the batches a backend submitted are recorded: in the store's `batches` table when the
stage attaches one (so a run killed while polling resumes the same batches), else in memory.

Each event of a batch is a row (`submitted`, then `collected`); the latest row of a batch key is
its state. A `submitted` row is written, as its own part (renamed into place whole), right after
the provider accepted the batch and before any poll, so no accepted batch can be forgotten by
a kill except in the moment between the provider's answer and that rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from r1v_data.store.parts import utcnow

if TYPE_CHECKING:
    from r1v_data.store import Store


@dataclass(frozen=True)
class BatchRecord:
    provider: str
    batch_id: str
    teacher: str
    request_ids: tuple[str, ...]
    attempt: int = 1
    url: str | None = None
    input_file_id: str | None = None
    event: str = "submitted"
    state: str | None = None
    results: int | None = None
    missing: int | None = None
    detail: str | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.batch_id}"


@dataclass
class Ledger:
    """The batches of one teacher, latest event each, in submission order."""

    records: dict[str, BatchRecord] = field(default_factory=dict)

    def add(self, record: BatchRecord) -> None:
        self.records[record.key] = record

    def update(self, key: str, **changes: Any) -> BatchRecord:
        record = replace(self.records[key], **changes)
        self.add(record)
        return record

    def latest_batch_of(self) -> dict[str, str]:
        """For every request id, the key of the newest batch holding it (a resubmission holds a
        request that an earlier batch left without a result)."""
        holder: dict[str, str] = {}
        for key, record in self.records.items():  # submission order: later batches win
            for rid in record.request_ids:
                holder[rid] = key
        return holder


class StoreLedger(Ledger):
    """A `Ledger` kept in the store's `batches` table, under the run that attached it."""

    def __init__(self, store: Store, run_id: str, teacher: str):
        super().__init__()
        self.store, self.run_id, self.teacher = store, run_id, teacher
        sql = (
            "SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY batch_key "
            "ORDER BY created_at DESC) AS rn FROM batches WHERE teacher = ?) WHERE rn = 1 ORDER BY batch_id"
        )
        first = "SELECT batch_key, min(created_at) AS first FROM batches WHERE teacher = ? GROUP BY batch_key"
        columns, rows = store.query(f"SELECT l.* FROM ({sql}) l JOIN ({first}) f USING (batch_key) ORDER BY f.first",
                                    params=[teacher, teacher])  # fmt: skip
        for row in rows:
            self.records[row[0]] = _record(dict(zip(columns, row, strict=True)))

    def add(self, record: BatchRecord) -> None:
        row = {f: getattr(record, f) for f in record.__dataclass_fields__}
        row.update(
            batch_key=record.key,
            request_ids=list(record.request_ids),
            run_id=self.run_id,
            created_at=utcnow(),
        )
        self.store.write_part("batches", [row], self.run_id, self._next_seq())
        super().add(record)

    def _next_seq(self) -> int:
        # a teacher and a reviser may both record batches in one run: number after the parts there
        prefix = f"part-{self.run_id}-"
        taken = [p.name for p in self.store.parts("batches") if p.name.startswith(prefix)]
        return 1 if not taken else max(int(n[len(prefix) : -8]) for n in taken) + 1


def _record(row: dict[str, Any]) -> BatchRecord:
    fields = BatchRecord.__dataclass_fields__
    values = {k: v for k, v in row.items() if k in fields}
    values["request_ids"] = tuple(values["request_ids"] or ())
    return BatchRecord(**values)
