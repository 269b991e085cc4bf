"""The one loader of the versioned Arrow schemas in `schemas/`.

Writers call `conform` before a part hits disk, so a row that does not match its schema fails
loudly at the writer, never later in a reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from r1v_data.errors import SchemaError

META_NAME = b"r1v.schema"
META_VERSION = b"r1v.schema_version"

_PRIMITIVES = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

STORE_TABLES = ("samples", "provenance", "quarantine", "scores", "traces", "decisions", "batches")
# tables added after stores already existed: an old store has no folder for them until a writer
# opens it (reads see them empty, doctor does not call the folder missing)
ADDED_TABLES = frozenset({"batches"})
OUTPUT_SCHEMAS = ("sft_row", "rl_row", "preference_pair")


def schemas_dir() -> Path:
    """Installed wheels carry the schemas inside the package; a source tree has them at the top."""
    for candidate in (Path(__file__).parents[1] / "schemas", Path(__file__).parents[2] / "schemas"):
        if (candidate / "types.json").is_file():
            return candidate
    raise SchemaError("the schemas/ folder is missing from this installation; reinstall r1v")


@dataclass(frozen=True)
class TableSchema:
    name: str
    version: int
    arrow: pa.Schema

    @property
    def columns(self) -> list[str]:
        return self.arrow.names


def _arrow_type(spec: Any, types: dict[str, Any]) -> pa.DataType:
    if isinstance(spec, str):
        if spec not in _PRIMITIVES:
            raise SchemaError(f"unknown schema type {spec!r}")
        return _PRIMITIVES[spec]
    if "list" in spec:
        return pa.list_(_arrow_type(spec["list"], types))
    if "struct" in spec:
        return pa.struct([_arrow_field(f, types) for f in spec["struct"]])
    if "ref" in spec:
        return _arrow_type(types[spec["ref"]], types)
    raise SchemaError(f"malformed schema type {spec!r}")


def _arrow_field(spec: dict[str, Any], types: dict[str, Any]) -> pa.Field:
    return pa.field(spec["name"], _arrow_type(spec["type"], types), spec.get("nullable", True))


@cache
def load(name: str) -> TableSchema:
    """Load schema `name` (e.g. "samples", "sft_row") as an Arrow schema with r1v metadata."""
    folder = schemas_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.json") if p.stem != "types")
        raise SchemaError(f"no schema named {name!r}; known: {', '.join(known)}")
    spec = json.loads(path.read_text())
    types = json.loads((folder / "types.json").read_text())
    fields = [_arrow_field(f, types) for f in spec["fields"]]
    metadata = {META_NAME: name.encode(), META_VERSION: str(spec["version"]).encode()}
    return TableSchema(name, int(spec["version"]), pa.schema(fields, metadata=metadata))


def conform(rows: list[dict[str, Any]] | pa.Table, name: str) -> pa.Table:
    """Build an Arrow table of schema `name` from rows, or check a table; raise SchemaError on
    a missing required value, an unknown column or a wrong type."""
    schema = load(name)
    given = rows.column_names if isinstance(rows, pa.Table) else {k for r in rows for k in r}
    unknown = set(given) - set(schema.columns)
    if unknown:
        raise SchemaError(f"{name}: columns not in schema v{schema.version}: {sorted(unknown)}")
    try:
        if isinstance(rows, pa.Table):
            table = _cast_table(rows, schema.arrow)
        else:
            table = pa.Table.from_pylist(rows, schema=schema.arrow)
        table.validate(full=True)
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        TypeError,
        UnicodeError,
    ) as exc:
        raise SchemaError(f"{name}: rows do not match schema v{schema.version}: {exc}") from exc
    _check_required(table, schema)
    return table


def _cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _check_required(table: pa.Table, schema: TableSchema) -> None:
    # from_pylist fills missing keys with nulls even for non-nullable fields, nested ones too
    # (an image without its sha256); refuse them here.
    for field in schema.arrow:
        for chunk in table.column(field.name).chunks:
            problem = _null_problem(chunk, field)
            if problem:
                raise SchemaError(f"{schema.name}: required column {problem}")


def _null_problem(array: pa.Array, field: pa.Field, path: str = "") -> str | None:
    name = f"{path}{field.name}"
    if not field.nullable and array.null_count:
        return f"{name!r} has {array.null_count} null value(s)"
    if pa.types.is_list(field.type):
        return _null_problem(array.flatten(), field.type.value_field, f"{name}[].")
    if pa.types.is_struct(field.type):
        valid = pc.is_valid(array) if array.null_count else None  # None: every struct is there
        for i, child_field in enumerate(field.type):
            child = array.field(i)
            # compute calls only where there are nulls to place (tens of µs each, per part)
            if (
                not child_field.nullable
                and child.null_count
                and (valid is None or pc.sum(pc.and_(valid, pc.is_null(child))).as_py())
            ):
                return f"{name}.{child_field.name!r} has null value(s)"
            problem = _null_problem(child if valid is None else child.filter(valid), child_field, f"{name}.")
            if problem:
                return problem
    return None


def check_readable(name: str, version: int, where: str) -> None:
    """Refuse data written with a newer schema than this r1v knows."""
    supported = load(name).version
    if version > supported:
        from r1v_data import __version__

        raise SchemaError(
            f"{where} was written with {name} schema v{version}, but this r1v ({__version__}) "
            f"reads up to v{supported}; upgrade r1v: pip install -U r1v"
        )
