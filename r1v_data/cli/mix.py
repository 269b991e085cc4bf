"""`r1v-data mix` (registered on the app by cli/main.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from r1v_data.cli.app import ConfigOpt, JsonOpt, OptStoreOpt, SetOpt, app, console, emit, out


@app.command()
def mix(
    store: OptStoreOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder for the shards and card.")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="What to write (repeatable): sft, rl, preference. (default: all)")
    ] = None,
    overwrite: Annotated[
        bool | None, typer.Option(help="Replace an earlier mix in --out (never anything r1v did not write).")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Mixing recipe YAML: components with a where, and a weight or rows.")
    ] = None,
    report: Annotated[
        bool | None,
        typer.Option("--report/--no-report", help="Write report.html beside the shards. (default: on)"),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the latest filter's selection as curated shards: SFT rows, RL rows, preference pairs."""
    from r1v_data.config import MixConfig, load_config
    from r1v_data.stages.mix import run_mix

    flags: dict[str, Any] = {
        "store": store, "out": out_dir, "kinds": kind or None, "overwrite": overwrite, "recipe": recipe,
        "report": report,
    }  # fmt: skip
    cfg = load_config(MixConfig, yaml_path=config, section="mix", sets=set_, flags=flags)
    with console.status("mix"):
        result = run_mix(cfg)
    emit(result.as_dict(), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    rows = ", ".join(f"{k}: {v:,} rows in {r['shards'][k]} shard(s)" for k, v in r["rows"].items())
    out.print(
        f"mix of filter run {r['filter_run']} into {r['out']} ({r['seconds']:.1f} s): {rows}", soft_wrap=True
    )
    if r.get("report"):
        out.print(f"  report: {r['report']} ({r['report_bytes'] / 1e6:.2f} MB)", soft_wrap=True)
    for c in r["mixture"]:
        out.print(
            f"  {c['component']}: {c['rows']:,} rows from {c['available']:,} selected, {c['tokens']:,} tokens"
        )


@app.command("export")
def export(
    mix_out: Annotated[Path, typer.Argument(help="A folder written by `r1v-data mix`.")],
    dest: Annotated[Path, typer.Option("--dest", help="Where to write the export.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="llamafactory (SFT rows: sharegpt + dataset_info.json), easyr1 or verl (RL rows: "
            "Parquet + r1v_reward.py).",
        ),
    ] = "llamafactory",
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in --dest.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export mix output to another trainer's layout."""
    from r1v_data.config import ExportConfig, load_config
    from r1v_data.stages.export import run_export

    flags = {"source": mix_out, "dest": dest, "format": fmt, "overwrite": overwrite}
    result = run_export(load_config(ExportConfig, flags=flags))
    emit(
        result.as_dict(),
        as_json,
        lambda r: out.print(f"exported {r['rows']:,} rows and {r['images']:,} images to {r['dest']}"),
    )


@app.command()
def preflight(
    mix_out: Annotated[Path, typer.Argument(help="A folder written by `r1v-data mix`.")],
    model: Annotated[
        str, typer.Option(help="The target model (a local folder or a cached Hub id): its chat template.")
    ],
    max_length: Annotated[int, typer.Option(help="The training context length, in tokens.")] = 16384,
    image_token: Annotated[
        str | None,
        typer.Option(
            help="The image placeholder the template writes. (default: the tokenizer's, or <image>)"
        ),
    ] = None,
    image_tokens: Annotated[int, typer.Option(help="Visual tokens each image becomes in the model.")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Check every SFT row against a target model's chat template and context length; exit 1 on failures."""
    from r1v_data.stages.preflight import preflight as run_preflight

    result = run_preflight(
        mix_out, model, max_length=max_length, image_token=image_token, image_tokens=image_tokens
    )
    emit(result.as_dict(), as_json, _render_preflight)
    if result.failed:
        raise typer.Exit(1)


def _render_preflight(r: dict[str, Any]) -> None:
    from rich.markup import escape

    bad = sum(r["failed"].values())
    out.print(f"preflight with {escape(r['model'])}: {r['rows']:,} rows, {bad:,} would break training "
              f"(longest {r['max_tokens_seen']:,} tokens)")  # fmt: skip
    for kind, n in r["failed"].items():
        out.print(f"  {kind}: {n:,}")
    for e in r["examples"]:
        out.print(escape(f"  {e['id']}: {e['problem']}"), soft_wrap=True)
