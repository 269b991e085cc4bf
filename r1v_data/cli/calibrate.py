"""`r1v-data calibrate`: fit DRLC's penalty range to a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from r1v_data.cli.app import ConfigOpt, ExistingStoreOpt, JsonOpt, SetOpt, app, emit, out, progress


@app.command()
def calibrate(
    store: ExistingStoreOpt,
    teacher: Annotated[
        str | None, typer.Option(help="The teacher to calibrate (a backend spec). (default: builtin)")
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="Problems, spread evenly from DRLC's easiest to its hardest. (default: 12)"),
    ] = None,
    penalties: Annotated[
        str | None, typer.Option(help="Penalties to try, e.g. 1.0,1.1,1.2,1.35,1.5 (the default).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion token limit. (default: 512)")] = None,
    shorten: Annotated[
        float | None,
        typer.Option(help="Target: this share fewer tokens on the easiest third. (default: 0.3)"),
    ] = None,
    max_accuracy_loss: Annotated[
        float | None, typer.Option(help="... losing at most this much accuracy there. (default: 0)")
    ] = None,
    where: Annotated[str | None, typer.Option(help="SQL filter over samples.")] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the fitted drlc settings here (YAML, for --config).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a teacher at fixed repetition penalties on a scored sample; print length, accuracy and
    form per penalty and difficulty third; fit drlc.penalty_range for the target. Run `score` first."""
    from r1v_data.config import CalibrateConfig, load_config
    from r1v_data.stages.calibrate import run_calibrate

    sets = list(set_ or [])
    if max_tokens is not None:
        sets.append(f"sampling.max_tokens={max_tokens}")
    flags = {"store": store, "teacher": teacher, "sample": sample, "shorten": shorten, "where": where,
             "max_accuracy_loss": max_accuracy_loss, "out": out_path,
             "penalties": _floats(penalties)}  # fmt: skip
    cfg = load_config(CalibrateConfig, yaml_path=config, section="calibrate", sets=sets, flags=flags)
    with progress() as bar:
        task = bar.add_task(f"calibrate ({cfg.teacher})", total=None, rate="")
        result = run_calibrate(
            cfg, progress=lambda done, total, _: bar.update(task, completed=done, total=total)
        )
    emit(result.as_dict(), as_json, _render)


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    from r1v_data.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--penalties {text!r}: give numbers separated by commas, e.g. 1.0,1.1,1.2"
        ) from None


def _render(r: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(escape(f"calibrate {r['teacher']} (run {r['run_id']}): {r['samples']} problems x "
                     f"{len(r['penalties'])} penalties, {r['completions']} completions, {r['failed']} failed, "
                     f"{r['seconds']} s"), soft_wrap=True)  # fmt: skip
    table = Table("penalty", "difficulty", "n", "tokens", "accuracy", "well-formed", "question words reused")
    for c in r["cells"]:
        table.add_row(f"{c['penalty']:g}", c["group"], str(c["n"]), f"{c['tokens']:g}", f"{c['accuracy']:.0%}",
                      f"{c['formed']:.0%}", f"{c['reuse']:.0%}", end_section=c["group"] == "all")  # fmt: skip
    out.print(table)
    fit = r["fit"]
    low, high = fit["penalty_range"]
    out.print(escape(f"fit: drlc.penalty_range=[{low:g},{high:g}] ({'target met' if fit['met'] else 'target not met'}: "
                     f"{fit['why']})"), soft_wrap=True)  # fmt: skip
    where = f"--config {r['out']}" if r["out"] else f"--set drlc.penalty_range=[{low:g},{high:g}]"
    out.print(escape(f"use it: r1v-data generate --adaptive-length {where} ..."), soft_wrap=True)
