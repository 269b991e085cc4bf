"""A store's folder on disk: `store.json` (format and schema versions, read before anything else)
and one folder per table, each starting with an empty part that carries the table's schema."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from r1v_data import __version__
from r1v_data.errors import StoreError
from r1v_data.store import schema
from r1v_data.store.parts import utcnow, write_parquet_atomic

STORE_FORMAT = 1


SCHEMA_PART = "part-0-schema.parquet"


# ---- helpers -----------------------------------------------------------------------------
def refuse_non_store(root: Path, create: bool) -> None:
    if root.exists() and not root.is_dir():
        raise StoreError(f"--store {root} is a file, not a store directory")
    if root.exists() and any(root.iterdir()):
        raise StoreError(
            f"{root} is not an r1v store (no store.json) and is not empty; choose a new or empty directory"
        )
    if not create:
        raise StoreError(f"no store at {root}; create one with: r1v-data ingest SOURCE --store {root}")


def initialise(root: Path) -> None:
    """Create a store at `root` (absent or an empty folder) all at once: it is built in a hidden
    folder beside and renamed into place, so a process killed half way leaves no half-made store
    that later runs would refuse as "not an r1v store". When another process creates the store
    first, its store stands and this one is dropped (the lock then says who is writing)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".r1v-new", dir=root.parent))
    try:
        for name in schema.STORE_TABLES:
            ensure_table_dir(tmp, name)
        info = {
            "format": STORE_FORMAT,
            "r1v_version": __version__,
            "created_at": utcnow().isoformat(),
            "schemas": {name: schema.load(name).version for name in schema.STORE_TABLES},
        }
        write_info(tmp, info)
        os.rename(tmp, root)  # replaces an empty folder; fails on one another process filled
    except OSError:
        if not (root / "store.json").is_file():
            raise  # a real failure, not a race lost to another creator (whose store now stands)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_info(root: Path, info: dict[str, Any]) -> None:
    tmp = root / ".store.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, root / "store.json")


def read_info(root: Path) -> dict[str, Any]:
    try:
        info = json.loads((root / "store.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{root}/store.json is unreadable ({exc}); the store is damaged") from exc
    schemas = info.get("schemas", {}) if isinstance(info, dict) else None
    valid = (
        isinstance(schemas, dict)
        and isinstance(info.get("format", 0), int)
        and all(isinstance(v, int) for v in schemas.values())
    )
    if not valid:
        raise StoreError(f"{root}/store.json is damaged (expected format and integer schema versions)")
    return info


def ensure_table_dir(root: Path, name: str) -> None:
    folder = root / name
    folder.mkdir(exist_ok=True)
    if not (folder / SCHEMA_PART).exists():
        write_parquet_atomic(schema.load(name).arrow.empty_table(), folder / SCHEMA_PART)


def check_versions(root: Path) -> None:
    info = read_info(root)
    if info.get("format", 0) > STORE_FORMAT:
        raise StoreError(
            f"store {root} has format {info['format']} (written by r1v {info.get('r1v_version')}); "
            f"this r1v ({__version__}) reads up to format {STORE_FORMAT}; upgrade r1v: pip install -U r1v"
        )
    for name, version in info.get("schemas", {}).items():
        if name in schema.STORE_TABLES:
            schema.check_readable(name, version, f"store {root}")
