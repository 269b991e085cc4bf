"""`r1v-data report` (registered on the app by cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from r1v_data.cli.app import ConfigOpt, JsonOpt, OptStoreOpt, SetOpt, app, console, emit, out


@app.command()
def report(
    store: OptStoreOpt = None,
    run: Annotated[
        str | None, typer.Option(help="The filter run to report on. (default: the latest)")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="The HTML file to write. (default: report.html)")
    ] = None,
    examples: Annotated[
        int | None, typer.Option(help="Examples in the gallery, 0 to 200. (default: 24)")
    ] = None,
    pipeline: Annotated[
        Path | None,
        typer.Option(help="A `r1v-data run` workdir: add its table of iterations (tau, rows, E, accuracy)."),
    ] = None,
    price: Annotated[
        list[str] | None,
        typer.Option(
            help="TEACHER=IN,OUT: USD per million prompt and completion tokens (repeatable), for costs."
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One offline HTML page to look at the data: funnel, lengths, verdicts, scores, dedup, mixture, gallery."""
    from r1v_data.config import ReportConfig, load_config
    from r1v_data.stages.report import run_report

    flags: dict[str, Any] = {
        "store": store, "run": run, "out": out_file, "examples": examples, "pipeline": pipeline,
        "prices": _prices(price) if price else None,
    }  # fmt: skip
    cfg = load_config(ReportConfig, yaml_path=config, section="report", sets=set_, flags=flags)
    with console.status("report"):
        result = run_report(cfg)
    emit(result.as_dict(), as_json, _render)


def _prices(values: list[str]) -> dict[str, tuple[float, float]]:
    from r1v_data.errors import ConfigError

    prices = {}
    for value in values:
        teacher, _, pair = value.rpartition("=")
        try:
            prompt, completion = (float(x) for x in pair.split(","))
        except ValueError:
            raise ConfigError(
                f"--price {value!r}: expected TEACHER=IN,OUT, e.g. openai:URL#m=0.5,1.5"
            ) from None
        if not teacher:
            raise ConfigError(
                f"--price {value!r}: name the teacher before '=' (as in the traces' teacher column)"
            )
        prices[teacher] = (prompt, completion)
    return prices


def _render(r: dict[str, Any]) -> None:
    run = f" (filter run {r['filter_run']})" if r["filter_run"] else ""
    out.print(
        f"report{run} written to {r['out']}: {r['bytes'] / 1e6:.2f} MB in {r['seconds']:.1f} s",
        soft_wrap=True,
    )
