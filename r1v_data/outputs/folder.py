"""The folders r1v writes for people (`mix --out`, `export --dest`) and when it may replace one.

A command writes its whole output into a new folder beside the destination, and only when that
is complete (every check passed, every file written, the manifest last) swaps it in: on Linux
with one `renameat2(RENAME_EXCHANGE)`, elsewhere with two renames that the next run repairs if a
crash falls between them. A crash therefore leaves the old output or the new one, never neither,
and a failed check leaves the old output untouched.

A folder that already holds something is replaced only with `overwrite`, and only when r1v wrote
it: its `manifest.json` names the same command and every entry at its top is one that command
writes. A store (a folder with `store.json` or `r1v.duckdb`), a folder holding one at any depth,
a folder inside one, and a folder a command reads from are never replaced, whatever the flags say
— a pipeline step can aim `--out` anywhere.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from r1v_data.errors import ConfigError
from r1v_data.redact import redact_value

MANIFEST = "manifest.json"
STORE_MARKERS = ("store.json", "r1v.duckdb")
# what each command writes at the top of its folder; anything else there is someone else's
WRITES = {
    "mix": {"README.md", MANIFEST, "report.html", "sft", "rl", "preference"},
    "export": {MANIFEST, "dataset_info.json", "r1v_sft.jsonl", "images", "data", "r1v_reward.py"},
}
FLAGS = {"mix": "--out", "export": "--dest"}
_NEW, _OLD = "new", "old"


@contextmanager
def replacing(dest: Path, command: str, *, overwrite: bool, reads: Sequence[Path] = ()) -> Iterator[Path]:
    """A new empty folder beside `dest` to write into; swapped in for `dest` when the block ends
    without an error, removed when it raises. `reads` are folders the command reads from."""
    try:
        _tidy(Path(dest).expanduser().resolve())  # first: the checks must see a repaired folder
    except OSError as exc:
        raise ConfigError(
            f"cannot tidy beside {dest} ({exc.strerror or exc}): choose another {FLAGS[command]}"
        ) from exc
    final = check_destination(dest, command, overwrite=overwrite, reads=reads)
    stage = _sibling(final, _NEW)
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write beside {final} ({exc.strerror or exc}): choose another {FLAGS[command]}"
        ) from exc
    try:
        yield stage
        check_destination(dest, command, overwrite=overwrite, reads=reads)  # it may have changed since
        try:
            _swap(stage, final)
        except OSError as exc:
            raise ConfigError(
                f"cannot move the new output into {final} ({exc.strerror or exc}); what was there is unchanged"
            ) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # the failed output, or the old one swapped out


def check_destination(dest: Path, command: str, *, overwrite: bool, reads: Sequence[Path] = ()) -> Path:
    """`dest` resolved, or a ConfigError when `command` may not write (or replace) it."""
    final = Path(dest).expanduser().resolve()
    flag = f"{FLAGS[command]} {dest}"
    try:
        _refuse_stores(final, flag)
        for source in reads:
            if Path(source).expanduser().resolve().is_relative_to(final):
                raise ConfigError(
                    f"{flag}: it holds {source}, which this command reads; choose another folder"
                )
        if final.exists() and not final.is_dir():
            raise ConfigError(f"{flag} is a file: choose a folder")
        if final.is_dir() and any(final.iterdir()):
            _check_replaceable(final, command, flag, overwrite)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read it ({exc.strerror or exc}); choose another folder") from exc
    return final


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """`folder/manifest.json`, written last: its presence marks the folder complete and r1v's."""
    text = json.dumps(redact_value(manifest), indent=2, default=str) + "\n"
    (folder / MANIFEST).write_text(text)


def _refuse_stores(final: Path, flag: str) -> None:
    if final.parent == final:
        raise ConfigError(f"{flag}: the filesystem root is never an output folder")
    if _looks_like_store(final):
        raise ConfigError(f"{flag} is a store: write outputs to a folder outside any store")
    store = next((folder for folder in final.parents if _is_store(folder)), None)
    if store is not None:
        raise ConfigError(f"{flag} is inside the store {store}: write outputs to a folder outside any store")


def _check_replaceable(final: Path, command: str, flag: str, overwrite: bool) -> None:
    wrote = _written_by(final)
    if wrote is None:
        raise ConfigError(
            f"{flag} is not empty and r1v did not write it (no r1v {MANIFEST}): choose a new or empty folder"
        )
    if wrote != command:
        raise ConfigError(
            f"{flag} holds the output of `r1v-data {wrote}`, not of {command}: choose another folder"
        )
    foreign = sorted(p.name for p in final.iterdir() if p.name not in WRITES[command])
    if foreign:
        raise ConfigError(
            f"{flag} holds {foreign[0]!r}, which `r1v-data {command}` did not write: move it out, or choose another folder"
        )
    store = next(_stores_below(final), None)
    if store is not None:
        raise ConfigError(f"{flag} holds the store {store}: r1v never replaces a folder that holds a store")
    if not overwrite:
        raise ConfigError(
            f"{flag} holds an earlier {command} output: pass --overwrite to replace it, or choose another folder"
        )


def _written_by(folder: Path) -> str | None:
    """The command the folder's manifest names, or None when it has no r1v manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "r1v_version" not in manifest:
        return None
    return manifest.get("command") if isinstance(manifest.get("command"), str) else None


def _is_store(folder: Path) -> bool:
    # strict: an unrelated project's store.json alone must not forbid every folder below it
    return (folder / "r1v.duckdb").is_file() or (
        (folder / "store.json").is_file() and (folder / "samples").is_dir()
    )


def _looks_like_store(folder: Path) -> bool:
    # broad on purpose: a false alarm here only keeps r1v from writing, never from keeping
    return any((folder / marker).exists() for marker in STORE_MARKERS)


def _stores_below(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):  # symlinks are not followed: nothing behind them is removed
        if any(marker in files or marker in dirs for marker in STORE_MARKERS):
            yield Path(root)


# ---- the swap ------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(new: Path, final: Path) -> None:
    """Put `new` at `final`; whatever was at `final` ends at `new` (removed by the caller)."""
    if not final.exists():
        os.rename(new, final)
    elif not _exchange(new, final):
        _swap_by_two_renames(new, final)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux 3.15+); False where the system or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_by_two_renames(new: Path, final: Path) -> None:
    # between the two renames the old output is only at `old`: `_tidy` puts it back if we die here
    old = _sibling(final, _OLD)
    os.rename(final, old)
    try:
        os.rename(new, final)
    except OSError:
        os.rename(old, final)
        raise
    os.rename(old, new)


def _sibling(final: Path, tag: str) -> Path:
    return final.with_name(f".{final.name}.r1v-{tag}.{socket.gethostname()}.{os.getpid()}")


def _tidy(final: Path) -> None:
    """Repair what a killed run left beside `final`: an old output caught between two renames
    goes back, and the folders of dead runs on this machine are removed."""
    prefix = f".{final.name}.r1v-"  # matched as a string: a name may hold glob characters
    siblings = final.parent.iterdir() if final.parent.is_dir() else []
    for path in sorted(p for p in siblings if p.name.startswith(prefix)):
        tag, host, pid = _parse_sibling(final, path)
        if host != socket.gethostname() or _alive(pid):
            continue  # another machine's run, or one still writing
        if tag == _OLD and not final.exists():
            os.rename(path, final)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _parse_sibling(final: Path, path: Path) -> tuple[str, str, int]:
    rest = path.name.removeprefix(f".{final.name}.r1v-")
    tag, _, host_pid = rest.partition(".")
    host, _, pid = host_pid.rpartition(".")
    return tag, host, int(pid) if pid.isdigit() else -1


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a name we wrote: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
