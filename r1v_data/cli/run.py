"""`r1v-data run`: a pipeline recipe's steps in order, finished ones skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r1v_data.cli.app import JsonOpt, SetOpt, app, console, emit, out


@app.command("run")
def run(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline YAML, e.g. pipelines/r1v.yaml.")],
    sets: SetOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the expanded steps; run nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every step of a pipeline (setup, t = 1..T, finish); a re-run skips the finished ones."""
    import shlex

    from r1v_data.stages.pipeline import load_pipeline, run_pipeline

    if dry_run:
        workdir, steps = load_pipeline(pipeline, sets)
        plan = [
            {
                "step": s.label,
                "argv": shlex.split(s.command),
                "manifest": str(workdir / "steps" / s.manifest_name),
            }
            for s in steps
        ]  # without credentials: a plan is shown, and often pasted
        emit(
            plan,
            as_json,
            lambda p: [
                out.print(f"{s['step']}: {shlex.join(s['argv'])}", markup=False, soft_wrap=True) for s in p
            ],
        )
        return
    result = run_pipeline(pipeline, sets, echo=lambda line: console.print(line, markup=False, soft_wrap=True))
    emit(result.as_dict(), as_json, lambda r: out.print(
        f"pipeline done in {r['seconds']} s: {len(r['ran'])} steps run, {len(r['skipped'])} skipped "
        f"(manifests in {r['workdir']}/steps)"))  # fmt: skip
