"""What runs inside a Ray actor: one backend per actor, built once (a vLLM engine loads once per
GPU), turning blocks of items into rows it writes as the block's own part.

This module never imports Ray: Ray Data instantiates `BlockWorker` in its actor pool and calls it
with batches of blocks. The actor writes its part before it returns, so what the driver is told
is on disk; a block run again writes the same part name again (see `store.block_parts`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from r1v_data.backends import make_backend
from r1v_data.executors.base import BlockFn, Done, Resources, Rows
from r1v_data.store.block_parts import write_block_part


class BlockWorker:
    def __init__(
        self, spec: str | None, options: dict[str, Any], fn: BlockFn, root: str, table: str, run_id: str
    ) -> None:
        self.backend = make_backend(spec, **options) if spec else None
        self.fn, self.root, self.table, self.run_id = fn, Path(root), table, run_id
        self.resources = Resources()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        blocks = [int(b) for b in batch["block"]]
        dones = [self._block(b, pickle.loads(p)) for b, p in zip(blocks, batch["payload"], strict=True)]
        return {"block": blocks, "dones": [pickle.dumps(d) for d in dones]}

    def _block(self, block: int, items: list[Any]) -> list[Done]:
        rows: Rows = []
        dones: list[Done] = []
        for made, done in self.fn(self.backend, items, self.resources):
            rows.extend(made)
            dones.append(done)
        write_block_part(self.root, self.table, rows, self.run_id, block)
        return dones

    def __del__(self) -> None:
        self.resources.close()
        close = getattr(getattr(self, "backend", None), "close", None)
        if close is not None:
            close()
