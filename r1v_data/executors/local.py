"""`--executor local`: the block function over every item, in this process, with the driver's
own backend; rows go into the stage's writer as they come (one buffer lost at most on a crash)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from r1v_data.backends import make_backend
from r1v_data.executors.base import Done, Resources, Work
from r1v_data.store import PartWriter


class LocalExecutor:
    name = "local"

    def __init__(self) -> None:
        self.resources = Resources()

    def map(self, work: Work, items: Iterable[Any], writer: PartWriter) -> Iterator[Done]:
        for name, value in work.extra.items():
            self.resources.put(name, value)  # the stage owns these: not closed here
        # a stage that holds no backend of its own (filter's judge) has it built here, for this map
        built = make_backend(work.spec, **work.options) if work.backend is None and work.spec else None
        try:
            for rows, done in work.fn(work.backend or built, items, self.resources):
                if rows:
                    writer.add_group(rows)
                yield done
        finally:
            for name in work.extra:
                self.resources.drop(name)
            if built is not None:
                built.close()

    def close(self) -> None:
        self.resources.close()
