"""`mix --out` and `export --dest` replace only their own earlier output, only after every check,
and by swapping the new output in whole (issue 14, item 1). Every case runs the real CLI; a case
passes only when every byte it could have destroyed is still there."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BIN, ingest_json, mathv_with_outputs, run_cli


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    return mathv_with_outputs(tmp_path_factory.mktemp("victim") / "store", shared, "--min-score", "3")


@pytest.fixture(scope="module")
def mixed(filtered: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real mix (sft) and its export, to copy into each case."""
    out = tmp_path_factory.mktemp("mixed") / "mix"
    run_cli("mix", "--store", filtered, "--out", out, "--kind", "sft", "--kind", "rl")
    run_cli("export", out, "--dest", out.parent / "export")
    return out


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with a digest of each file's bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused command."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _store_copy(store: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(store, tmp / "work" / "store"))


def _mix_copy(mixed: Path, tmp: Path, *extra: str) -> Path:
    dest = tmp / "out"
    shutil.copytree(mixed, dest)
    for name in extra:
        (dest / name).write_text("mine\n")
    return dest


def _with_inner_store(mixed: Path, tmp: Path) -> Path:
    dest = _mix_copy(mixed, tmp)
    ingest_json("builtin:sample", "--store", dest / "sft" / "kept")  # a store inside a kind's folder
    return dest


def _forged_store(mixed: Path, tmp: Path) -> Path:
    dest = tmp / "out"  # a real store, with a mix's manifest and card dropped in
    ingest_json("builtin:sample", "--store", dest)
    for name in ("manifest.json", "README.md"):
        shutil.copy(mixed / name, dest / name)
    return dest


def _user_folder(mixed: Path, tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("years of work\n")
    return tmp / "out"


def _a_file(mixed: Path, tmp: Path) -> Path:
    (tmp / "out").write_text("not a folder\n")
    return tmp / "out"


def _symlink_to_store(store: Path, tmp: Path) -> Path:
    (tmp / "out").symlink_to(store, target_is_directory=True)
    return tmp / "out"


Case = Callable[[Path, Path, Path], Path]  # (store, mixed, tmp) -> the destination
CASES: dict[str, Case] = {
    "the store": lambda s, m, t: s,
    "the store's parent": lambda s, m, t: s.parent,
    "a symlink to the store": lambda s, m, t: _symlink_to_store(s, t),
    "inside the store": lambda s, m, t: s / "mixes",
    "a folder a user wrote": lambda s, m, t: _user_folder(m, t),
    "a file": lambda s, m, t: _a_file(m, t),
    "a mix with a user's file in it": lambda s, m, t: _mix_copy(m, t, "notes.md"),
    "a mix holding a store": lambda s, m, t: _with_inner_store(m, t),
    "a store with a mix manifest": lambda s, m, t: _forged_store(m, t),
}
EXPORT_CASES: dict[str, Case] = {
    "the mix it reads": lambda s, m, t: m,
    "the mix's parent": lambda s, m, t: m.parent,
    "a mix (not an export)": lambda s, m, t: _mix_copy(m, t),
}


@pytest.mark.parametrize("case", CASES)
def test_mix_overwrite_never_replaces_what_it_did_not_write(
    case: str, filtered: Path, mixed: Path, tmp_path: Path
) -> None:
    store = _store_copy(filtered, tmp_path)  # each case its own: a failing one may destroy it
    dest = CASES[case](store, mixed, tmp_path)
    guarded = [tmp_path, mixed.parent]
    before = [tree(root) for root in guarded]
    refused(run_cli("mix", "--store", store, "--out", dest, "--overwrite", check=False))
    assert [tree(root) for root in guarded] == before


@pytest.mark.parametrize("case", [*CASES, *EXPORT_CASES])
def test_export_overwrite_never_replaces_what_it_did_not_write(
    case: str, filtered: Path, mixed: Path, tmp_path: Path
) -> None:
    dest = {**CASES, **EXPORT_CASES}[case](_store_copy(filtered, tmp_path), mixed, tmp_path)
    guarded = [tmp_path, mixed.parent]
    before = [tree(root) for root in guarded]
    refused(run_cli("export", mixed, "--dest", dest, "--overwrite", check=False))
    assert [tree(root) for root in guarded] == before


def test_export_replaces_its_own_output_only_when_asked(mixed: Path, tmp_path: Path) -> None:
    dest = tmp_path / "lf"
    first = json.loads(run_cli("export", mixed, "--dest", dest, "--json").stdout)
    assert json.loads((dest / "manifest.json").read_text())["command"] == "export"
    assert "--overwrite" in refused(run_cli("export", mixed, "--dest", dest, check=False))
    again = json.loads(run_cli("export", mixed, "--dest", dest, "--overwrite", "--json").stdout)
    assert again == first and sorted(p.name for p in tmp_path.iterdir()) == ["lf"]  # nothing left beside


@pytest.mark.parametrize(
    "recipe",
    [
        "components:\n  - {name: x, weight: 1, rows: 3}\n",  # two sizes
        "components: [\n",  # not YAML
        "components:\n  - {name: x, where: 'no_such_column > 1', weight: 1}\n",  # fails in the query
        None,  # no such file
    ],
    ids=["invalid", "not-yaml", "bad-where", "missing"],
)
def test_a_bad_recipe_leaves_the_previous_mix_byte_identical(
    recipe: str | None, filtered: Path, mixed: Path, tmp_path: Path
) -> None:
    out = _mix_copy(mixed, tmp_path)
    path = tmp_path / "recipe.yaml"
    if recipe is not None:
        path.write_text(recipe)
    before = tree(tmp_path)
    refused(run_cli("mix", "--store", filtered, "--out", out, "--overwrite", "--recipe", path, check=False))
    assert tree(tmp_path) == before


def test_a_killed_overwrite_leaves_the_old_mix_and_the_next_run_the_new(
    filtered: Path, mixed: Path, tmp_path: Path
) -> None:
    out = _mix_copy(mixed, tmp_path)
    old = tree(out)
    args = ["mix", "--store", str(filtered), "--out", str(out), "--overwrite", "--kind", "sft"]
    args += ["--set", "shard_bytes=2048"]  # a row a shard: a slow mix, killed part way
    proc = subprocess.Popen([str(BIN / "r1v-data"), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and len(_shards_beside(out)) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_shards_beside(out)) >= 3, "the mix ended before it could be killed mid-write"
    assert tree(out) == old  # the old mix whole while the new one was being written
    result = json.loads(run_cli(*args, "--json").stdout)
    assert result["shards"]["sft"] > 3 and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == result["rows"] and tree(out) != old


def _shards_beside(out: Path) -> list[Path]:
    return [p for d in out.parent.glob(".out.r1v-new.*") for p in d.glob("*/data/*.parquet")]


def test_an_old_mix_caught_between_two_renames_is_put_back(
    filtered: Path, mixed: Path, tmp_path: Path
) -> None:
    """Where the exchange is not available, a crash between the fallback's two renames leaves the
    old mix under its side name: the next run puts it back before anything else."""
    out = _mix_copy(mixed, tmp_path)
    old = tree(out)
    dead = _dead_pid()
    host = socket.gethostname()
    out.rename(tmp_path / f".out.r1v-old.{host}.{dead}")
    (tmp_path / f".out.r1v-new.{host}.{dead}" / "sft").mkdir(parents=True)  # the new one, half written
    assert "--overwrite" in refused(run_cli("mix", "--store", filtered, "--out", out, check=False))
    assert tree(out) == old and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_fallback_swap_exchanges_two_folders(tmp_path: Path) -> None:
    from r1v_data.outputs.folder import _swap_by_two_renames

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").write_text("old\n")
    _swap_by_two_renames(tmp_path / "new", tmp_path / "out")
    assert (tmp_path / "out" / "a").read_text() == "new\n" and (tmp_path / "new" / "a").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]
