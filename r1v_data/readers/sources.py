"""Readers for ingest sources: JSONL, JSON, Parquet, saved or Hub `datasets`, image folders.

Each reader yields `Record`s in source order. A row that cannot be parsed is yielded as a
Record with an `error` so ingest can quarantine it with its location; only a source that cannot
be opened at all raises `SourceError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1v_data.errors import SourceError
from r1v_data.readers.hub import looks_like_path, require_hub

BUNDLED_SAMPLE = "builtin:sample"
HUB_PREFIXES = ("hf://", "hf:")
RAW_LIMIT = 4000  # characters of a bad record kept in the quarantine
BOM = b"\xef\xbb\xbf"


@dataclass
class Record:
    location: str
    data: dict[str, Any] | None = None
    error: tuple[str, str] | None = None  # (reason, detail)
    raw: str | None = None


@dataclass
class Source:
    spec: str
    name: str
    kind: str
    base_dir: Path  # relative image paths resolve here and may not leave it
    total: int | None
    uri: str  # absolute path or Hub id: tells apart two files that share a name
    _iter: Callable[[], Iterator[Record]] = field(repr=False)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def records(self) -> Iterator[Record]:
        return self._iter()

    def peek_columns(self, probe: int = 20) -> tuple[set[str], list[dict[str, Any]]]:
        """Column names of the first parseable records (for preset detection)."""
        columns: set[str] = set()
        first: list[dict[str, Any]] = []
        for rec in self.records():
            if rec.data is not None:
                columns |= rec.data.keys()
                first.append(rec.data)
                if len(first) >= probe:
                    break
        return columns, first


def bundled_sample_dir() -> Path:
    return Path(__file__).parents[1] / "sample_data"


def open_source(spec: str, *, split: str | None = None, records_key: str | None = None) -> Source:
    """Open one source spec: a path, `builtin:sample`, or `hf:ORG/NAME` for a Hub dataset."""
    if spec == BUNDLED_SAMPLE:
        src = open_source(str(bundled_sample_dir() / "sample.jsonl"))
        src.spec, src.name = spec, "r1v_sample"
        return src
    if spec.startswith(HUB_PREFIXES):
        return _open_hub(spec, split)
    path = Path(spec).expanduser()
    if not path.exists():
        hint = "" if looks_like_path(spec) else f" (for a Hugging Face Hub dataset write hf:{spec})"
        raise SourceError(f"source {spec!r} does not exist{hint}")
    if path.is_dir():
        return _open_dir(path, spec, split, records_key)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path, spec)
    if suffix == ".json":
        return _json(path, spec, records_key)
    if suffix == ".parquet":
        return _parquet([path], spec, path.stem, path.parent, path)
    raise SourceError(
        f"source {spec!r}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet, "
        "a saved datasets folder, a folder of images with a JSONL, or hf:NAME)"
    )


# ---- JSON lines ------------------------------------------------------------------------------
def _jsonl(path: Path, spec: str) -> Source:
    _check_readable(path)

    def records() -> Iterator[Record]:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if lineno == 1:
                    line = line.removeprefix(BOM)
                if line.strip():
                    yield _parse_line(line, f"{path.name}:{lineno}")

    return _file_source(path, spec, "jsonl", _count_lines(path), records)


def _parse_line(line: bytes, location: str) -> Record:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line.decode("utf-8", errors="replace")[:RAW_LIMIT]
        return Record(location, error=("invalid utf-8", str(exc)), raw=raw)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return _bad(location, f"invalid JSON: {exc}", text)
    except RecursionError:
        return _bad(location, "JSON nested too deeply", text)
    if not isinstance(obj, dict):
        return _bad(location, f"a JSON {type(obj).__name__}, not an object", text)
    return Record(location, data=obj)


def _bad(location: str, detail: str, raw: str) -> Record:
    return Record(location, error=("unparseable record", detail), raw=raw[:RAW_LIMIT])


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


# ---- JSON documents ----------------------------------------------------------------------------
def _json(path: Path, spec: str, records_key: str | None) -> Source:
    _check_readable(path)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SourceError(f"source {spec!r} is not UTF-8 text: {exc}") from exc
    except RecursionError:
        raise SourceError(f"source {spec!r}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        if _first_line_is_object(raw):
            return _jsonl(path, spec)  # many ".json" files are really JSON lines
        raise SourceError(f"source {spec!r} is not valid JSON: {exc}") from None
    rows, key = _json_rows(doc, records_key, spec)
    prefix = f"{path.name}:{key}" if key else path.name

    def records() -> Iterator[Record]:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                yield Record(f"{prefix}[{i}]", data=row)
            else:
                raw_row = json.dumps(row, default=str)
                yield _bad(f"{prefix}[{i}]", f"a JSON {type(row).__name__}, not an object", raw_row)

    return _file_source(path, spec, "json", len(rows), records)


def _first_line_is_object(raw: bytes) -> bool:
    first = raw.removeprefix(BOM).split(b"\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def _json_rows(doc: Any, records_key: str | None, spec: str) -> tuple[list[Any], str | None]:
    if isinstance(doc, list):
        return doc, None
    if not isinstance(doc, dict):
        raise SourceError(f"source {spec!r}: JSON top level is a {type(doc).__name__}, not a list or object")
    if records_key:
        if not isinstance(doc.get(records_key), list):
            raise SourceError(
                f"source {spec!r}: no list under key {records_key!r} (keys: {sorted(doc)[:10]})"
            )
        return doc[records_key], records_key
    # {"info": ..., "questions": [{...}, ...]}: the one key holding a list of objects
    lists = [k for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    if len(lists) == 1:
        return doc[lists[0]], lists[0]
    if len(lists) > 1:
        raise SourceError(f"source {spec!r}: several keys hold rows ({', '.join(lists)}); pass --records-key")
    if _keyed_by_id(doc):
        # Metadata entries beside the records ({"version": "1.0", ...}) become bad records, not lost ones.
        return [{"id": k, **v} if isinstance(v, dict) else v for k, v in doc.items()], None
    return [doc], None  # a single record


def _keyed_by_id(doc: dict[str, Any]) -> bool:
    """{id: record}, as MathVista and MMMU's answer files are written: every value an object, or
    three in four of them at least two objects with a field in common (a single record with an
    image dict and a metadata dict is not one)."""
    records = [v for v in doc.values() if isinstance(v, dict)]
    if not records or len(records) == len(doc):
        return bool(records)
    shared = set.intersection(*(set(r) for r in records))
    return len(records) >= 2 and 4 * len(records) >= 3 * len(doc) and bool(shared)


# ---- Parquet ---------------------------------------------------------------------------------
def _parquet(paths: list[Path], spec: str, name: str, base_dir: Path, uri: Path) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        files = [pq.ParquetFile(p) for p in paths]
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise SourceError(f"source {spec!r}: not a readable Parquet file ({exc})") from exc
    total = sum(f.metadata.num_rows for f in files)

    def records() -> Iterator[Record]:
        for path, pf in zip(paths, files, strict=True):
            row = 0
            for group in range(pf.num_row_groups):
                size = pf.metadata.row_group(group).num_rows
                try:
                    items = pf.read_row_group(group).to_pylist()
                except (OSError, pa.ArrowException) as exc:
                    # A damaged row group is recorded once, with the rows it held, and skipped.
                    where = f"{path.name}:rows {row}-{row + size - 1}"
                    yield Record(where, error=("unreadable row group", f"row group {group}: {exc}"))
                    row += size
                    continue
                for item in items:
                    yield Record(f"{path.name}:row {row}", data=item)
                    row += 1

    fingerprint = {"files": [_file_fingerprint(p) for p in paths]}
    return Source(
        spec, name, "parquet", base_dir.absolute(), total, str(uri.absolute()), records, fingerprint
    )


# ---- folders -------------------------------------------------------------------------------
def _open_dir(path: Path, spec: str, split: str | None, records_key: str | None) -> Source:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return _saved_dataset(path, spec, split)
    metadata = path / "metadata.jsonl"  # the datasets "imagefolder" convention
    if metadata.exists():
        return _renamed(_jsonl(metadata, spec), path.name)
    tables = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".ndjson"))
    if len(tables) == 1:
        return _renamed(open_source(str(tables[0]), records_key=records_key), path.name)
    parquet = sorted(path.rglob("*.parquet"))
    if parquet and not tables:
        return _parquet(parquet, spec, path.name, path, path)
    found = ", ".join(p.name for p in tables) or "no .jsonl/.json/.parquet files"
    raise SourceError(
        f"source {spec!r} is a folder and it is not clear which file holds the rows "
        f"({found}); name the file instead of the folder"
    )


def _renamed(src: Source, name: str) -> Source:
    src.name = name
    return src


# ---- Hugging Face datasets ---------------------------------------------------------------------
def _saved_dataset(path: Path, spec: str, split: str | None) -> Source:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise SourceError(f"source {spec!r}: not a readable saved dataset ({exc})") from exc
    return _from_datasets(ds, spec, path.name, path.absolute(), split, str(path.absolute()))


def _open_hub(spec: str, split: str | None) -> Source:
    import datasets

    name = spec.split(":", 1)[1].lstrip("/")
    require_hub(f"source {spec!r}")
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown name, gated: all end here
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise SourceError(
            f"source {spec!r}: cannot load Hub dataset {name!r} ({type(exc).__name__}: {first_line})"
        ) from exc
    # Hub datasets carry their images as bytes; a path in them must not reach this machine's
    # files, so relative paths resolve in a folder that does not exist.
    return _from_datasets(
        ds, spec, name.replace("/", "__"), Path("/nonexistent-hub-base"), None, f"hf:{name}"
    )


def _from_datasets(ds: Any, spec: str, name: str, base_dir: Path, split: str | None, uri: str) -> Source:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split is not None and split not in ds:
            raise SourceError(f"source {spec!r} has no split {split!r} (splits: {list(ds)})")
        parts = {split: ds[split]} if split is not None else dict(ds)
    else:
        parts = {split or "train": ds}

    def records() -> Iterator[Record]:
        for split_name, part in parts.items():
            row = 0
            # The arrow format skips image decoding: Image columns arrive as {"bytes", "path"}.
            for batch in part.with_format("arrow").iter(batch_size=256):
                for item in batch.to_pylist():
                    yield Record(f"{split_name}:row {row}", data=item)
                    row += 1

    fingerprint = {
        "uri": uri,
        "fingerprints": {k: getattr(v, "_fingerprint", None) for k, v in parts.items()},
    }
    total = sum(len(p) for p in parts.values())
    return Source(spec, name, "datasets", base_dir, total, uri, records, fingerprint)


# ---- helpers -----------------------------------------------------------------------------------
def _file_source(
    path: Path, spec: str, kind: str, total: int, records: Callable[[], Iterator[Record]]
) -> Source:
    uri = str(path.absolute())
    return Source(spec, path.stem, kind, path.parent.absolute(), total, uri, records, _file_fingerprint(path))


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise SourceError(f"source {str(path)!r} cannot be read: {exc.strerror or exc}") from exc


def _file_fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {
        "path": str(path.absolute()),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }
