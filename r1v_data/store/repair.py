"""What can be wrong with a store's files, and how `r1v-data doctor --repair` puts it right.

Nothing is deleted that could hold data: a damaged or foreign part is moved to `damaged/TABLE/`,
an unreadable catalog or run record is renamed beside itself. Only temporary files of writes that
never finished are removed. A lost catalog is rebuilt from `runs/*.json` and the parts' own
metadata (a run known only from its parts comes back with status `recovered` and no manifest).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from r1v_data.errors import DamagedStoreError, StoreError
from r1v_data.store import catalog, compact, registry, schema
from r1v_data.store.journal import fold_journals
from r1v_data.store.layout import SCHEMA_PART, ensure_table_dir, read_info
from r1v_data.store.parts import utcnow

UNREADABLE_INFO = "unreadable store.json"


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str
    fix: str  # what --repair does about it

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def diagnose(root: Path) -> list[Problem]:
    """Every problem of the store at `root`, without changing anything."""
    problems = _info_problems(root)
    runs, more = _known_runs(root)
    problems += more
    for table in schema.STORE_TABLES:
        problems += _table_problems(root, table, runs)
    problems += [Problem("temporary file", str(p), "left by a write that never finished", "delete it")
                 for p in catalog.temporary_files(root)]  # fmt: skip
    return problems + _unfinished_writes(root)


def repair(root: Path, problems: list[Problem]) -> list[str]:
    """Fix `problems` (the caller holds the store's lock); what was done, one line each."""
    done = [_fix(root, p) for p in problems]
    done.append(_rebuild_catalog(root))
    return done


# ---- diagnosis ----------------------------------------------------------------------------------
def _info_problems(root: Path) -> list[Problem]:
    try:
        read_info(root)
    except StoreError as exc:
        return [Problem(UNREADABLE_INFO, str(root / "store.json"), str(exc).split("; ")[0].removeprefix(f"{root}/"),
                        "none: restore it from a copy of the store (which schema versions wrote it is unknown)")]  # fmt: skip
    return []


def _known_runs(root: Path) -> tuple[set[str] | None, list[Problem]]:
    """The runs of this store, or None when the catalog that knows them is lost (then a part's run
    cannot be judged, and its run comes back as `recovered`); and the problems met on the way."""
    runs = {r["run_id"] for r in catalog.read_run_files(root)}
    problems = [Problem("unreadable run record", str(p), "not a JSON run record", "rename it *.damaged")
                for p in _bad_run_files(root)]  # fmt: skip
    path = root / catalog.CATALOG
    if not path.exists():
        try:
            catalog.refuse_lost_catalog(root)
        except DamagedStoreError:
            problems.append(Problem("missing catalog", str(path), "the runs table and part registry are gone",
                                    "rebuild it from runs/ and the parts' metadata"))  # fmt: skip
            return None, problems
        return runs, problems
    try:
        con = duckdb.connect()
        runs |= catalog.load_into(con, root).runs
        con.close()
    except DamagedStoreError as exc:
        problems.append(Problem("unreadable catalog", str(path), str(exc).split(";")[0],
                                "rename it r1v.duckdb.damaged and rebuild it"))  # fmt: skip
        return None, problems
    return runs, problems


def _table_problems(root: Path, table: str, runs: set[str] | None) -> list[Problem]:
    folder = root / table
    problems = []
    if table in schema.ADDED_TABLES and not folder.exists():
        return problems  # a store from before the table: a writer adds it
    if not (folder / SCHEMA_PART).exists():
        problems.append(Problem("missing schema part", str(folder / SCHEMA_PART), f"{table} has no schema part",
                                "write it again"))  # fmt: skip
    for path in registry.part_files(folder):
        try:
            info = registry.read_part_info(path, table)
            if runs is not None and info.run_id is not None and info.run_id not in runs:
                raise DamagedStoreError(f"comes from run {info.run_id}, which this store never ran")
        except DamagedStoreError as exc:
            reason = str(exc).removeprefix(f"{path} ").split("; see `r1v-data doctor")[0]
            problems.append(Problem("damaged part", str(path), reason, f"move it to damaged/{table}/"))
    return problems


def _bad_run_files(root: Path) -> list[Path]:
    folder = root / catalog.RUNS
    good = {f"{r['run_id']}.json" for r in catalog.read_run_files(root)}
    return [p for p in sorted(folder.glob("*.json")) if p.name not in good] if folder.is_dir() else []


def _unfinished_writes(root: Path) -> list[Problem]:
    """Journals and compaction intents a killed writer left (the next writer's open tidies them)."""
    problems = []
    for table in schema.STORE_TABLES:
        folder = root / table
        if not folder.is_dir():
            continue
        problems += [Problem("unfolded journal", str(p), "results a killed generate acknowledged",
                             "write them as their part") for p in sorted(folder.glob(".journal-*.jsonl"))]  # fmt: skip
        problems += [Problem("unfinished compaction", str(p), "a compaction a kill interrupted",
                             "finish it (target written) or drop it") for p in sorted(folder.glob(".compact-*.json"))]  # fmt: skip
    return problems


# ---- repair -------------------------------------------------------------------------------------
def _fix(root: Path, problem: Problem) -> str:
    path = Path(problem.path)
    if problem.kind == "damaged part":
        target = root / "damaged" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        return f"moved {path} to {target}"
    if problem.kind == "missing schema part":
        ensure_table_dir(root, path.parent.name)
        return f"wrote {path}"
    if problem.kind == "temporary file":
        path.unlink(missing_ok=True)
        return f"deleted {path}"
    if problem.kind == "unfolded journal":
        fold_journals(root)
        return f"folded {path} into its part"
    if problem.kind == "unfinished compaction":
        compact.recover(root)
        return f"finished or undid the compaction of {path}"
    if problem.kind in ("unreadable run record", "unreadable catalog"):
        path.rename(path.with_name(f"{path.name}.damaged-{utcnow():%Y%m%dT%H%M%S}"))
        return f"set {path} aside"
    return f"{problem.kind}: rebuilt with the catalog"


def _rebuild_catalog(root: Path) -> str:
    """Runs and manifests from the catalog (when readable) and the run files, the registry from
    the parts that are left; written beside the catalog, then renamed over it."""
    path = root / catalog.CATALOG
    old = _old_runs(path)
    tmp = root / f".{catalog.CATALOG}.rebuild.tmp"
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        catalog.prepare(con, root)
        runs = _restore_runs(con, root, old)
        parts = _register_all(con, root)
        catalog.refresh_views(con)
    finally:
        con.close()
    tmp.replace(path)
    return f"rebuilt {path}: {runs} runs, {parts} parts"


def _old_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return []
    try:
        sql = "SELECT r.*, m.manifest FROM runs r LEFT JOIN manifests m USING (run_id)"
        return con.sql(sql).to_arrow_table().to_pylist()
    except duckdb.Error:
        return []
    finally:
        con.close()


def _restore_runs(con: duckdb.DuckDBPyConnection, root: Path, old: list[dict[str, Any]]) -> int:
    records = {r["run_id"]: r for r in old}
    records.update({r["run_id"]: r for r in catalog.read_run_files(root)})  # the files are newest
    for info in _all_parts(root):
        if info.run_id is not None and info.run_id not in records:
            records[info.run_id] = {"run_id": info.run_id, "status": "recovered"}
    for r in records.values():
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [r["run_id"], r.get("command"), r.get("status"), r.get("r1v_version"), r.get("started_at"),
                     r.get("finished_at"), _json(r.get("counts"))])  # fmt: skip
        if r.get("manifest") is not None:
            con.execute("INSERT INTO manifests VALUES (?, ?)", [r["run_id"], _json(r["manifest"])])
    return len(records)


def _register_all(con: duckdb.DuckDBPyConnection, root: Path) -> int:
    infos = _all_parts(root)
    for info in infos:
        con.execute("INSERT INTO parts VALUES (?, ?, ?, ?)", [info.path, info.bytes, info.rows, info.run_id])
    return len(infos)


def _all_parts(root: Path) -> list[registry.PartInfo]:
    """The parts that pass the checks of their own metadata (after the damaged ones moved out)."""
    infos = []
    for table in schema.STORE_TABLES:
        for path in registry.part_files(root / table):
            try:
                infos.append(registry.read_part_info(path, table))
            except DamagedStoreError:
                continue  # listed by diagnose; never registered
    return infos


def _json(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value, default=str)
