"""What a stage hands an executor, and what it gets back.

A stage describes its model work as a `Work`: the backend (by spec, so a worker can build its own
copy), a `BlockFn` that turns a block of items into rows and `Done` records with the backend, and
the table the rows go to. The executor runs the function where the backend lives (this process,
or Ray actors) and yields one `Done` per item, in any order; the rows reach the store as parts
(the driver's writer locally, block parts written by the workers on Ray). The stage keeps what
only the driver may do: building requests and their ids, skipping finished ones, counting,
progress, and the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from r1v_data.backends import Backend
from r1v_data.store import PartWriter

Rows = list[dict[str, Any]]


@dataclass
class Done:
    """One item finished: its key (a request id, a sample id), whether it counts as done for good
    (a failure that may succeed later does not), and the stage's counters it adds (`tally`)."""

    key: str
    finished: bool = True
    tally: Any = None


class Resources:
    """What a block function may keep between blocks in one process (a verifier pool): made
    once on first use, closed with the executor."""

    def __init__(self) -> None:
        self._held: dict[str, Any] = {}

    def get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._held:
            self._held[name] = make()
        return self._held[name]

    def put(self, name: str, value: Any) -> None:
        self._held[name] = value

    def drop(self, name: str) -> None:
        """Forget `name` without closing it (its owner closes it)."""
        self._held.pop(name, None)

    def close(self) -> None:
        for value in self._held.values():
            close = getattr(value, "close", None)
            if close is not None:
                close()
        self._held.clear()


# (backend, the block's items, resources) -> (rows to write, what finished) per item. A picklable
# module-level function or object: Ray ships it to the workers.
BlockFn = Callable[[Backend | None, Iterable[Any], Resources], Iterator[tuple[Rows, Done]]]


@dataclass
class Work:
    spec: str | None  # the backend spec and options a worker builds its own backend from (None:
    options: dict[str, Any]  # the function needs no backend, e.g. local estimators)
    fn: BlockFn
    table: str  # where the rows go
    backend: Backend | None = None  # the driver's backend: the local executor uses it
    extra: dict[str, Any] = field(default_factory=dict)  # resources the driver already holds


class Executor(Protocol):
    name: str  # local | ray

    def map(self, work: Work, items: Iterable[Any], writer: PartWriter) -> Iterator[Done]:
        """Run `work.fn` over `items`; rows reach the store in `writer`'s run."""
        ...

    def close(self) -> None: ...
