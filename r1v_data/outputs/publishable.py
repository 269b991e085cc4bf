"""What a folder must hold to be published: the checks `publish` makes before its first request
(the card's front matter, whole shard sets, configs that match shards), the allowlist of files
that go up (the card, the manifest, report.html when there is one, the shards), and valid repository ids and branch names."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from r1v_data.errors import ConfigError

DEFAULT_REVISION = "main"
REPORT = "report.html"  # the page `mix` writes (outputs/report); published when present


_SHARD = re.compile(r"(?P<split>[\w-]+?)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet")


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*")


_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|(//)|([\s~^:?*\[\\@{]|\x7f)|(/$)|(\.lock$)|(\.$)")


@dataclass
class Plan:
    files: list[tuple[str, Path, int]]  # (path in repo, local path, size)
    ignored: list[str]
    manifest: dict[str, Any]


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    ok = (
        len(parts) == 2
        and len(repo_id) <= 96
        and all(_REPO_ID.fullmatch(p) and not p.endswith((".", "-")) for p in parts)
        and ".." not in repo_id
        and "--" not in repo_id
        and not repo_id.endswith(".git")
    )
    if not ok:
        raise ConfigError(
            f"--repo-id {repo_id!r}: expected ORG/NAME, each part letters, digits, '-', '_' or '.' "
            "(not at the ends), no '--' or '..', at most 96 characters"
        )
    return repo_id


def check_revision(revision: str | None) -> str:
    if revision is None:
        return DEFAULT_REVISION
    if not revision or _BRANCH_BAD.search(revision) or revision.startswith("refs/"):
        raise ConfigError(f"--revision {revision!r}: not a valid branch name (e.g. main, v1, mix/2025-06)")
    return revision


def plan_upload(out: Path) -> Plan:
    """The files to upload, or a ConfigError saying what is wrong with the folder."""
    hint = "give the --out folder of `r1v-data mix`"
    if not out.exists():
        raise ConfigError(f"{out} does not exist: {hint}")
    if not out.is_dir():
        raise ConfigError(f"{out} is not a folder: {hint}")
    card = out / "README.md"
    if not card.is_file():
        raise ConfigError(f"{out} has no README.md dataset card: {hint}")
    meta = _front_matter(card)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{out} has no manifest.json: {hint}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{manifest_path} is not valid JSON ({exc}): run `r1v-data mix` again") from exc
    if not isinstance(manifest, dict):
        raise ConfigError(f"{manifest_path} is not a JSON object: run `r1v-data mix` again")

    leftovers = sorted(p for p in out.glob("*/data/.*.parquet.tmp"))
    if leftovers:
        raise ConfigError(
            f"{leftovers[0]} is a partial shard left by an interrupted mix: "
            "run `r1v-data mix --overwrite` again before publishing"
        )
    shards = sorted(p for p in out.glob("*/data/*.parquet") if p.is_file() and not p.name.startswith("."))
    if not shards:
        raise ConfigError(f"{out} has no Parquet shards (KIND/data/*.parquet): {hint}")
    _check_shard_sets(out, shards)

    files = [("README.md", card), ("manifest.json", manifest_path)]
    report = out / REPORT
    if report.is_file():  # mix's report.html, which the card links to
        files.append((REPORT, report))
    files += [(p.relative_to(out).as_posix(), p) for p in shards]
    paths = {rel for rel, _ in files}
    _check_card_configs(meta, paths)
    ignored = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).as_posix() not in paths
    )
    return Plan([(rel, p, p.stat().st_size) for rel, p in files], ignored, manifest)


def _front_matter(card: Path) -> dict[str, Any]:
    try:
        text = card.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{card} is not UTF-8 text: run `r1v-data mix` again") from exc
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if not lines or lines[0].strip() != "---" or end is None:
        raise ConfigError(
            f"{card} has no YAML front matter (a block between '---' lines at the top): "
            "the Hub reads the dataset's configs from it; run `r1v-data mix` again"
        )
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 2}" if where is not None else ""
        raise ConfigError(
            f"{card}: the YAML front matter does not parse{line}: fix or rewrite the card"
        ) from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{card}: the YAML front matter is not a mapping of keys to values")
    return meta


def _check_shard_sets(out: Path, shards: list[Path]) -> None:
    """Every `SPLIT-i-of-N` set under a kind has all N files, so no data is silently missing."""
    sets: dict[tuple[Path, str, int], set[int]] = {}
    for p in shards:
        m = _SHARD.fullmatch(p.name)
        if m is None:
            continue  # a Parquet file named otherwise is published as it is
        sets.setdefault((p.parent, m["split"], int(m["n"])), set()).add(int(m["i"]))
    for (folder, split, n), have in sorted(sets.items()):
        missing = sorted(set(range(n)) - have)
        if missing:
            name = f"{split}-{missing[0]:05d}-of-{n:05d}.parquet"
            raise ConfigError(
                f"{folder.relative_to(out)}/{name} is missing ({len(missing)} of {n} shards): "
                "the folder is incomplete; run `r1v-data mix --overwrite` again"
            )


def _check_card_configs(meta: dict[str, Any], paths: set[str]) -> None:
    configs = meta.get("configs") or []
    if not isinstance(configs, list):
        raise ConfigError("README.md: `configs` in the front matter is not a list")
    for config in configs:
        if not isinstance(config, dict):
            raise ConfigError("README.md: an entry of `configs` in the front matter is not a mapping")
        data_files = config.get("data_files") or []
        patterns: list[Any] = []
        for df in data_files if isinstance(data_files, list) else [data_files]:
            got = df.get("path") if isinstance(df, dict) else df
            patterns += got if isinstance(got, list) else [got]
        for pattern in patterns:
            if isinstance(pattern, str) and not fnmatch.filter(paths, pattern):
                raise ConfigError(
                    f"README.md: config {config.get('config_name')!r} reads {pattern}, "
                    "which matches no file in the folder; run `r1v-data mix` again"
                )


def is_shard_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 3 and parts[1] == "data" and parts[2].endswith(".parquet")
