"""Sharded Parquet in the Hugging Face datasets layout, written as a stream with bounded memory.

`ShardWriter` takes rows one at a time (or a table of them at a time), writes a row group every `group_bytes` and starts a new
file every `shard_bytes`; files are written under temporary names and renamed to
`{split}-00000-of-000NN.parquet` when the last one is closed (the total is known only then),
so a crash never leaves a half set that looks complete. The Arrow schema carries the `datasets`
features (images as `Image`), so `load_dataset` decodes the images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r1v_data.store import schema


def hf_features(table_name: str) -> Any:
    """The `datasets` features of an output schema: its Arrow types, with `images` as Images."""
    return hf_features_of(schema.load(table_name).arrow)


def hf_features_of(arrow: Any) -> Any:
    """The `datasets` features of an Arrow schema, with an `images` column as decoded Images."""
    import datasets

    features = datasets.Features.from_arrow_schema(arrow)
    if "images" in features:
        features["images"] = datasets.List(datasets.Image())
    return features


def find_shards(mix_out: Path, kind: str) -> list[Path]:
    """One kind's shards in a folder `r1v-data mix` wrote, in order; a clear error when none."""
    from r1v_data.errors import ConfigError

    shards = sorted((Path(mix_out) / kind / "data").glob("train-*.parquet"))
    if not shards:
        raise ConfigError(_why_no_shards(Path(mix_out), kind))
    return shards


# why mix wrote no row of a kind, when it wrote the kind: what the filter run it read left
_EMPTY_BECAUSE = {
    "sft": "kept no traces",
    "rl": "kept no sample with a reference answer",
    "preference": "kept no trace with a lower-rewarded candidate of its sample to reject",
}


def _why_no_shards(mix_out: Path, kind: str) -> str:
    """Not "run mix" when mix ran and the filter is why the kind is empty."""
    try:
        manifest = json.loads((mix_out / "manifest.json").read_text())
        rows = manifest["counts"]["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        rows = {}
    if rows.get(kind) != 0:
        return f"{mix_out} has no {kind} shards ({kind}/data/train-*.parquet): run `r1v-data mix` with --kind {kind} first"
    store, run = manifest.get("store"), manifest.get("filter_run")
    return (
        f"{mix_out} has no {kind} rows: the filter run {run} it was mixed from {_EMPTY_BECAUSE.get(kind, 'kept nothing')}; "
        f"`r1v-data stats --store {store}` shows what was dropped and why (dropped_by_rule): lower "
        "--min-score, or generate more traces, then filter and mix again"
    )


class ShardWriter:
    def __init__(
        self,
        folder: Path,
        table_name: str,
        *,
        split: str = "train",
        shard_bytes: int = 256 << 20,
        group_bytes: int = 8 << 20,
    ):
        self.folder, self.table_name, self.split = Path(folder), table_name, split
        self.shard_bytes, self.group_bytes = shard_bytes, min(group_bytes, shard_bytes)
        # the features' own Arrow schema (with their metadata): `datasets` trusts the features in
        # a file only where the file's types match them exactly, list item names included
        arrow = schema.load(table_name).arrow
        features = hf_features(table_name).arrow_schema
        self.schema = features.with_metadata({**(arrow.metadata or {}), **(features.metadata or {})})
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self.paths: list[Path] = []
        self._buffer: list[Any] = []  # rows (dicts), or tables of rows
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._written = 0  # bytes in the current shard so far (estimated from the rows)

    def add(self, row: dict[str, Any], size: int) -> None:
        """Add one row; `size` is its approximate encoded size in bytes (images and text)."""
        self._buffer.append(row)
        self._buffered += size
        self.rows += 1
        if self._buffered >= self.group_bytes:
            self._flush()

    def add_table(self, table: pa.Table, sizes: np.ndarray) -> None:
        """Add rows built as a table, `sizes` as in `add`: row groups and shards end after the
        same rows as if they had been added one at a time."""
        start = 0
        while start < len(table):
            reach = np.cumsum(sizes[start:]) + self._buffered  # bytes buffered after each row
            full = np.flatnonzero(reach >= self.group_bytes)
            stop = start + (int(full[0]) + 1 if len(full) else len(table) - start)
            self._buffer.append(table.slice(start, stop - start))
            self._buffered, self.rows = int(reach[stop - start - 1]), self.rows + stop - start
            if len(full):
                self._flush()
            start = stop

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self.folder / f".{self.split}-{len(self.paths):05d}.parquet.tmp"
            self.paths.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        table = schema.conform(_rows(self._buffer), self.table_name)  # validated against r1v's schema first
        self._writer.write_table(table.cast(self.schema))
        self._written += self._buffered
        self._buffer, self._buffered = [], 0
        if self._written >= self.shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._written = None, 0

    def close(self) -> list[Path]:
        """Write what is buffered and give the shards their final names; returns them."""
        self._flush()
        self._close_shard()
        total = len(self.paths)
        final = []
        for i, tmp in enumerate(self.paths):
            path = self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet"
            os.replace(tmp, path)
            final.append(path)
        self.paths = final
        return final


def _rows(buffer: list[Any]) -> list[dict[str, Any]] | pa.Table:
    """What `add` buffered, or one table of what `add_table` did (in one chunk: the same file)."""
    if buffer and isinstance(buffer[0], pa.Table):
        return pa.concat_tables(buffer).combine_chunks()
    return buffer
