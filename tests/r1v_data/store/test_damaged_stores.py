"""Damaged stores through the real CLI: copied, foreign, truncated and missing parts, a lost
catalog, glob characters in store paths. Each is refused with one line naming it (never a wrong
count), `r1v-data doctor` lists it and `--repair` puts the store right."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, ingest_json, run_cli, stats_json

from r1v_data.store import Store


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample, ingested and scored (two runs of history)."""
    store = tmp_path_factory.mktemp("pristine") / "store"
    ingest_json("builtin:sample", "--store", store)
    run_cli("score", "--store", store)
    return store


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    return copy


def _data_part(store: Path, table: str) -> Path:
    return next(p for p in sorted((store / table).glob("part-2*.parquet")))


def _refused(store: Path, *command: str) -> str:
    proc = run_cli(*command, "--store", store, check=False)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:"), proc.stderr
    return proc.stderr


def _doctor(store: Path, *args: str) -> tuple[int, dict]:
    proc = run_cli("doctor", "--store", store, "--json", *args, check=False)
    return proc.returncode, json.loads(proc.stdout)


def _copy_as(part: Path, folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    shutil.copy(part, folder / name)
    return folder / name


DAMAGE = {
    "a part copied twice": lambda s: _copy_as(_data_part(s, "samples"), s / "samples", "part-copy.parquet"),
    "a scores part copied twice": lambda s: _copy_as(_data_part(s, "scores"), s / "scores", "part-x.parquet"),
    "a part of another table": lambda s: _copy_as(_data_part(s, "scores"), s / "traces", "part-9.parquet"),
    "a truncated part": lambda s: (s / "traces" / "part-t.parquet").write_bytes(_data_part(s, "samples").read_bytes()[:500]),
    "a garbled part": lambda s: (s / "provenance" / "part-g.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1"),
    "a part of another store": lambda s: _foreign_part(s),
}  # fmt: skip


def _foreign_part(store: Path) -> None:
    other = store.parent / "other"
    ingest_json("builtin:sample", "--store", other, "--limit", "3")
    shutil.copy(_data_part(other, "samples"), store / "samples" / _data_part(other, "samples").name)


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_parts_are_refused_listed_and_set_aside(store: Path, damage: str) -> None:
    before = stats_json(store)
    DAMAGE[damage](store)
    for command in (("stats",), ("sql", "SELECT count(*) FROM samples"), ("filter", "--min-score", "3")):
        assert "doctor" in _refused(store, *command)
    code, report = _doctor(store)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["damaged part"]
    code, report = _doctor(store, "--repair")
    assert code == 0 and report["remaining"] == []
    assert stats_json(store) == before
    assert len(list((store / "damaged").rglob("*.parquet"))) == 1  # set aside, not deleted


def test_a_lost_catalog_is_refused_then_rebuilt_with_its_history(store: Path) -> None:
    runs = run_cli(
        "sql", "SELECT run_id, command, status FROM runs ORDER BY run_id", "--store", store, "--json"
    )
    (store / "r1v.duckdb").unlink()
    assert "catalog" in _refused(store, "stats")
    assert "catalog" in _refused(store, "score")  # a writer would start a new, empty history
    code, report = _doctor(store, "--repair")
    assert code == 0 and report["problems"][0]["kind"] == "missing catalog"
    again = run_cli(
        "sql", "SELECT run_id, command, status FROM runs ORDER BY run_id", "--store", store, "--json"
    )
    assert json.loads(again.stdout) == json.loads(runs.stdout) and len(json.loads(runs.stdout)) == 2
    manifests = Store.open(store).query("SELECT count(*) FROM manifests")[1]
    assert manifests == [(2,)]


def test_a_missing_schema_part_and_leftover_temporary_files(store: Path) -> None:
    (store / "decisions" / "part-0-schema.parquet").unlink()
    (store / "samples" / ".part-x.parquet.1234.tmp").write_bytes(b"half a part")
    assert stats_json(store)["samples"] == 38  # reading needs neither
    code, report = _doctor(store)
    assert code == 1 and {p["kind"] for p in report["problems"]} == {"missing schema part", "temporary file"}
    run_cli("score", "--store", store)  # the next writer tidies both
    assert (store / "decisions" / "part-0-schema.parquet").exists()
    assert not list((store / "samples").glob(".*.tmp"))
    assert _doctor(store)[0] == 0


@pytest.mark.parametrize("name", ["st[1]", "st*", "a b'c"])
def test_glob_characters_in_a_store_path_never_read_another_store(tmp_path: Path, name: str) -> None:
    ingest_json("builtin:sample", "--store", tmp_path / "st1", "--limit", "5")  # what a glob would match
    ingest_json("builtin:sample", "--store", tmp_path / "stx", "--limit", "7")
    odd = tmp_path / name
    ingest_json("builtin:sample", "--store", odd, "--limit", "2")
    assert stats_json(odd)["samples"] == 2
    rows = run_cli("sql", "SELECT count(*) AS n FROM samples", "--store", odd, "--json").stdout
    assert json.loads(rows) == [{"n": 2}]


def test_a_question_mark_in_a_store_path_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("ingest", "builtin:sample", "--store", tmp_path / "st?", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "may not contain '?'" in proc.stderr
    assert not (tmp_path / "st?").exists()


def test_a_first_ingest_that_dies_while_creating_the_store_leaves_nothing_in_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1v_data.store import layout

    target = tmp_path / "new"
    target.mkdir()  # an empty folder is a fine place for a store; a half-made store must not block it

    def die(*_: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(layout, "write_info", die)
    with pytest.raises(OSError, match="killed"):
        Store.open(target, write=True, create=True)
    monkeypatch.undo()
    assert list(target.iterdir()) == []
    assert ingest_json("builtin:sample", "--store", target, "--limit", "2")["sources"][0]["added"] == 2


def test_two_first_ingests_at_once_meet_the_lock_not_a_non_store(tmp_path: Path) -> None:
    target = tmp_path / "new"
    args = [str(BIN / "r1v-data"), "ingest", "builtin:sample", "--store", str(target)]
    procs = [
        subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, err in results:
        assert code == 0 or ("is being written by" in err and "Traceback" not in err), err
    assert stats_json(target)["samples"] == 38


@pytest.mark.parametrize("garbage", ["{", '{"format": "one"}', "[]"])
def test_a_damaged_store_json_is_named_by_doctor_and_repair_stops_in_one_line(
    store: Path, garbage: str
) -> None:
    (store / "store.json").write_text(garbage)
    assert "store.json" in _refused(store, "stats")
    code, report = _doctor(store)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["unreadable store.json"]
    proc = run_cli("doctor", "--store", store, "--repair", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "store.json" in proc.stderr
    assert "Traceback" not in proc.stderr
