"""`r1v-data score`: AL-CoTD's QDAM/VTIA scores (registered on the app by cli/main.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from r1v_data.cli.app import (
    ConfigOpt,
    ExecutorOpt,
    JsonOpt,
    OptStoreOpt,
    RayAddressOpt,
    SetOpt,
    app,
    emit,
    executor_sets,
    out,
    progress,
)


@app.command()
def score(
    store: OptStoreOpt = None,
    scorer: Annotated[
        str | None, typer.Option(help="Comma-separated scorers: qdam, vtia. (default: qdam,vtia)")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="Backend spec of a judge model for the judged properties (image necessity, question "
            "quality, difficulty, reasoning demand, integration). Without one, local heuristic "
            "estimators are used; image clarity is always measured locally."
        ),
    ] = None,
    where: Annotated[str | None, typer.Option(help="SQL filter over samples.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many samples.")] = None,
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run",
            help="With --judge: print the judge requests, expected tokens and cost; send nothing.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score samples for adaptive-length distillation (QDAM: S_v, S_t; VTIA: S_I); cached per version."""
    from r1v_data.config import ScoreConfig, load_config
    from r1v_data.stages.score import run_score

    flags: dict[str, Any] = {
        "store": store,
        "judge": judge,
        "where": where,
        "limit": limit,
        "dry_run": dry_run,
    }
    if scorer is not None:
        flags["scorers"] = [s.strip() for s in scorer.split(",") if s.strip()]
    cfg = load_config(
        ScoreConfig,
        yaml_path=config,
        section="score",
        sets=[*(set_ or []), *executor_sets(executor, ray_address)],
        flags=flags,
    )
    if cfg.dry_run:
        from r1v_data.cli.generate import render_estimate
        from r1v_data.stages.score_estimate import estimate_score

        emit(estimate_score(cfg), as_json, render_estimate)
        return
    with progress() as bar:
        task = bar.add_task("score", total=None, rate="")
        result = run_score(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    emit(result.as_dict(), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(
        escape(
            f"score with {r['source']} (run {r['run_id']}): {r['samples']} samples in {r['seconds']:.1f} s, "
            f"{r['judge_calls']} judge calls"
        ),
        soft_wrap=True,
    )
    for name in sorted(set(r["scored"]) | set(r["cached"]) | set(r["failed"])):
        failed = r["failed"].get(name, 0)
        note = f", {failed} failed (asked again on the next run)" if failed else ""
        out.print(f"{name}: {r['scored'].get(name, 0)} scored, {r['cached'].get(name, 0)} cached{note}")
    if r.get("cost"):
        from r1v_data.cli.generate import describe_cost

        out.print(escape("judge cost: " + describe_cost(r["cost"], r["prompt_tokens"], r["completion_tokens"])),
                  soft_wrap=True)  # fmt: skip
    for label, table in r["agreement"].items():
        cells = ", ".join(f"{n} {v['rho']:+.2f} (n={v['n']})" for n, v in table.items())
        out.print(f"spearman {label.replace('_', ' ')}: {cells}", soft_wrap=True)
    preview = r["preview"]
    if not preview:
        return
    p = preview["penalty"]
    out.print(
        f"DRLC penalty (generate --adaptive-length): min {p['min']:.3f}, median {p['median']:.3f}, "
        f"mean {p['mean']:.3f}, max {p['max']:.3f}; {preview['unscored']} unscored (neutral)"
    )
    if preview["by_level"]:
        table = Table("level", "samples", "mean penalty", title="penalty by source difficulty level")
        for row in preview["by_level"]:
            table.add_row(str(row["level"]), str(row["n"]), f"{row['mean_penalty']:.3f}")
        out.print(table)
