"""The trace journal (a result is durable once acknowledged) and compaction (small parts merged
atomically): every row is in exactly one visible part, whatever moment a process is killed at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from r1v_data.store import SCHEMA_PART, Store, score_row


def _rows(store: Path, table: str = "scores") -> list[tuple]:
    return Store.open(store).query(f"SELECT sample_id, name FROM {table} ORDER BY ALL")[1]


def _data_parts(store: Path, table: str = "scores") -> list[str]:
    return sorted(p.name for p in (store / table).iterdir() if p.name != SCHEMA_PART)


def _write_journaled(root: Path, flushed: str, unflushed: str) -> str:
    """Rows written through a journaled writer by a process that dies before its last flush."""
    store = Store.open(root, write=True, create=True)
    run = store.begin_run("test")
    writer = store.writer("scores", run, journal=True, flush_seconds=3600)
    for samples in (flushed, unflushed):
        writer.flush()
        for s in samples:
            writer.add_group([score_row(run, s, None, "qdam", "v", n, 0.5, None) for n in "xy"])
    store.close()  # no flush: the kill
    return run


def test_a_journal_becomes_its_part_once_with_a_torn_record_ignored(tmp_path: Path) -> None:
    root = tmp_path / "s"
    run = _write_journaled(root, "ab", "c")  # a and b in a part; c only in the journal
    journal = root / "scores" / f".journal-{run}-00002.jsonl"
    assert _data_parts(root) == [journal.name, f"part-{run}-00001.parquet"]
    with open(journal, "ab") as f:
        f.write(b'[{"sample_id": "d", "na')  # a record the kill cut short: never acknowledged
    # a journal whose part was already written (killed between the two) is spent, not re-read
    spent = root / "scores" / f".journal-{run}-00001.jsonl"
    spent.write_bytes(journal.read_bytes())
    listed = run_cli("doctor", "--store", root, check=False).stdout
    assert listed.count("unfolded journal") == 2
    run_cli("doctor", "--store", root, "--repair")  # what the next writer's open does, too
    expected = [(s, n) for s in "abc" for n in "xy"]
    assert _rows(root) == expected
    assert _data_parts(root) == [f"part-{run}-00001.parquet", f"part-{run}-00002.parquet"]
    Store.open(root, write=True).close()  # folding again changes nothing
    assert _rows(root) == expected


_KILL_AFTER_TARGET = """
import os, signal, sys
from pathlib import Path
from r1v_data.store import Store

unlink = Path.unlink
def die_before_removing_a_source(self, *a, **kw):
    if self.name.startswith("part-"):  # the compacted part is in place; its sources are not gone
        os.kill(os.getpid(), signal.SIGKILL)
    unlink(self, *a, **kw)
Path.unlink = die_before_removing_a_source
Store.open(sys.argv[1], write=True).compact()
"""


def test_compaction_killed_between_target_and_sources_keeps_every_row_once(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with Store.open(root, write=True, create=True) as store:
        run = store.begin_run("test")
        with store.writer("scores", run, flush_rows=2) as writer:
            for s in "abcdef":
                writer.add_group([score_row(run, s, None, "qdam", "v", n, 0.5, None) for n in "xy"])
    expected = _rows(root)
    assert len(_data_parts(root)) == 6
    child = subprocess.run([sys.executable, "-c", _KILL_AFTER_TARGET, str(root)], env={**os.environ})
    assert child.returncode == -9
    on_disk = _data_parts(root)
    assert f"part-{run}-c00001.parquet" in on_disk and len(on_disk) == 8  # target, intent, 6 sources
    assert _rows(root) == expected  # a reader already skips the replaced parts
    summary = run_cli("compact", "--store", root, "--json").stdout  # opening finishes the compaction
    assert '"merged_parts": 0' in summary
    assert _data_parts(root) == [f"part-{run}-c00001.parquet"]
    assert _rows(root) == expected
