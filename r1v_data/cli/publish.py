"""`r1v-data publish` (registered on the app by cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from r1v_data.cli.app import JsonOpt, app, console, emit, out


@app.command()
def publish(
    mix_out: Annotated[Path, typer.Argument(help="A folder written by `r1v-data mix`.")],
    repo_id: Annotated[
        str, typer.Option("--repo-id", help="The Hub dataset repository, ORG/NAME (created if missing).")
    ],
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="Create the repository private (an existing public one is refused, not changed).",
        ),
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option(help="The branch to commit to, created from main if missing. (default: main)"),
    ] = None,
    commit_message: Annotated[
        str | None,
        typer.Option("--commit-message", help="The commit's summary. (default: names the filter run)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be uploaded and send nothing (works offline).")
    ] = False,
    retries: Annotated[
        int, typer.Option(min=0, max=10, help="Re-sends per step after a connection error, 429 or 5xx.")
    ] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Upload mix output (card, manifest, report.html, shards) to a Hub dataset repository as one commit.

    The token is huggingface_hub's: HF_TOKEN, or the one `hf auth login` saved.
    """
    from r1v_data.stages.publish import publish as run_publish

    kwargs: dict[str, Any] = {
        "private": private, "revision": revision, "commit_message": commit_message, "retries": retries,
    }  # fmt: skip
    if dry_run:
        result = run_publish(mix_out, repo_id, dry_run=True, **kwargs)
    else:
        if not console.is_terminal:  # no progress bars in logs; the summary says what was sent
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        with console.status(f"publish to {repo_id}"):
            result = run_publish(mix_out, repo_id, **kwargs)
    emit(result.as_dict(), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    from rich.markup import escape

    where = f"dataset {r['repo_id']}@{r['revision']}" + (" (private)" if r["private"] else "")
    n, size = len(r["files"]), _size(r["total_bytes"])
    if r["dry_run"]:
        out.print(
            escape(f"dry run: would upload {n} files ({size}) to {where}; nothing was sent"), soft_wrap=True
        )
    else:
        retried = f", {r['retries']} re-sends" if r["retries"] else ""
        out.print(
            escape(f"published {n} files ({size}) to {where} in {r['seconds']:.1f} s{retried}"),
            soft_wrap=True,
        )
        out.print(escape(f"  commit: {r['commit_url']}"), soft_wrap=True)
        out.print(escape(f"  repo:   {r['repo_url']}"), soft_wrap=True)
    width = max(len(f["path"]) for f in r["files"])
    for f in r["files"]:
        out.print(escape(f"  {f['path']:<{width}}  {_size(f['size']):>9}"), soft_wrap=True)
    for p in r["deleted"]:
        out.print(escape(f"  deleted {p} (a shard of an earlier publish)"), soft_wrap=True)
    if r["ignored"]:
        shown = ", ".join(r["ignored"][:5]) + (" ..." if len(r["ignored"]) > 5 else "")
        out.print(escape(f"  not published: {len(r['ignored'])} other file(s): {shown}"), soft_wrap=True)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
