"""`r1v-data`: a thin Typer layer. Commands parse flags, call library functions and render.

Library modules are imported inside the commands so that `r1v-data --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="r1v-data",
    help="Build adaptive-length chain-of-thought data for vision-language reasoning models "
    "(the Skywork R1V recipe): ingest, generate, filter, mix, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (created if missing).")]
OptStoreOpt = Annotated[Path | None, typer.Option("--store", "-s", help="Store directory.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override it.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set a.b=value.")]


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print a command's result as JSON, or rendered for people."""
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        render(result)


def _print_version(value: bool) -> None:
    if value:
        from r1v_data import __version__

        out.print(f"r1v {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """r1v-data."""


@app.command()
def ingest(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files (.jsonl, .json, .parquet), folders (saved datasets, images + JSONL), "
            "hf:ORG/NAME for a Hub dataset, or builtin:sample for the bundled sample.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", "-s", help="Store directory (created if missing).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Column layout: native, mathvision, math500, competition_math, gsm8k, r1v, "
            "superclevr, vqa, imagefolder, mmmu. Detected from the columns when unambiguous."
        ),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Map a field to source column(s): --map question=problem --map images=img1,img2. "
            "Fields: source_id question options answer solution images subject difficulty caption.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Source name for provenance (default: file stem).")] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(
            help="Folder that relative image paths resolve in and may not leave (default: the source's)."
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Dataset split (saved or Hub datasets).")] = None,
    records_key: Annotated[
        str | None, typer.Option(help="Key holding the rows in a JSON object file.")
    ] = None,
    allow_remote_images: Annotated[
        bool | None,
        typer.Option("--allow-remote-images", help="Fetch http(s) image URLs (refused by default)."),
    ] = None,
    max_pixels: Annotated[
        int | None, typer.Option(help="Quarantine larger images. (default: 40000000)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most N rows per source.")] = None,
    workers: Annotated[int | None, typer.Option(help="Image decoding threads. (default: 4)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, hash and store problems; quarantine bad rows with their reason."""
    from r1v_data.config import IngestConfig, load_config
    from r1v_data.ingest import run_ingest
    from r1v_data.presets import parse_map_flags

    flags: dict[str, Any] = {
        "store": store,
        "sources": sources,
        "preset": preset,
        "name": name,
        "image_root": image_root,
        "split": split,
        "records_key": records_key,
        "allow_remote_images": allow_remote_images,
        "max_pixels": max_pixels,
        "limit": limit,
        "workers": workers,
        "mapping": parse_map_flags(map_) if map_ else None,
    }
    cfg = load_config(IngestConfig, yaml_path=config, section="ingest", sets=set_, flags=flags)
    with _progress() as bar:
        tasks: dict[str, Any] = {}

        def on_progress(source: str, done: int, total: int | None) -> None:
            if source not in tasks:
                tasks[source] = bar.add_task(f"ingest {source}", total=total, rate="")
            elapsed = bar.tasks[tasks[source]].elapsed or 0.0
            rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            bar.update(tasks[source], completed=done, rate=rate)

        result = run_ingest(cfg, progress=on_progress)
    emit(result.as_dict(), as_json, lambda _: _render_ingest(result))


def _render_ingest(result: Any) -> None:
    from rich.markup import escape

    table = Table(title=escape(f"ingest into {result.store} (run {result.run_id})"))
    for col in (
        "source",
        "preset",
        "read",
        "added",
        "known, new place",
        "unchanged",
        "quarantined",
    ):
        table.add_column(col, justify="left" if col in ("source", "preset") else "right")
    for s in result.sources:
        numbers = (s.read, s.added, s.new_provenance, s.unchanged, sum(s.quarantined.values()))
        table.add_row(escape(s.name), s.preset, *map(str, numbers))
    out.print(table)
    reasons = result.quarantine_reasons()
    if reasons:
        listed = _counts(dict(reasons.most_common()))
        out.print(escape(f"quarantined by reason: {listed}"), soft_wrap=True)
        out.print(
            f"inspect them with: r1v-data sql --store {escape(str(result.store))} "
            '"SELECT location, reason, detail FROM quarantine"',
            soft_wrap=True,
            highlight=False,
        )


@app.command()
def generate(
    store: OptStoreOpt = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL. (default: builtin, a weak "
            "embedded model for trying r1v out)"
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Self-distillation rounds: round r+1 retries the "
            "problems with no correct trace yet. (default: 1)"
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Samples per problem. (default: 1)")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many problems.")] = None,
    where: Annotated[
        str | None, typer.Option(help='SQL filter over samples, e.g. "difficulty >= 3".')
    ] = None,
    reviser: Annotated[
        str | None,
        typer.Option(
            help="A judge (backend spec) that rewrites each unsolved problem's wrong trace, given the "
            "reference answer, after the last round; rewrites are marked revised in provenance."
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="(default: 0.6)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion token limit. (default: 1024)")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="(default: 1.0)")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed. (default: 0)")] = None,
    adaptive_length: Annotated[
        bool | None,
        typer.Option(
            "--adaptive-length/--fixed-length",
            help="AL-CoTD: set each sample's repetition penalty (and, with drlc.max_tokens_range, its "
            "token budget) from its QDAM/VTIA scores; run `r1v-data score` first. (default: fixed)",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Distil <think> traces from a teacher; resumable, verified, over self-distillation rounds."""
    from r1v_data.config import GenerateConfig, load_config
    from r1v_data.generate import run_generate

    sampling = {
        k: v
        for k, v in {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "repetition_penalty": repetition_penalty,
            "seed": seed,
        }.items()
        if v is not None
    }
    sets = list(set_ or []) + [f"sampling.{k}={v}" for k, v in sampling.items()]
    flags = {
        "store": store,
        "teacher": teacher,
        "rounds": rounds,
        "n": n,
        "limit": limit,
        "where": where,
        "reviser": reviser,
        "adaptive_length": adaptive_length,
    }
    cfg = load_config(GenerateConfig, yaml_path=config, section="generate", sets=sets, flags=flags)
    with _progress() as bar:
        task = bar.add_task(f"generate ({cfg.teacher})", total=None, rate="")

        def on_progress(done: int, total: int | None, tokens: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = f"{tokens / elapsed:,.0f} tok/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        result = run_generate(cfg, progress=on_progress)
    emit(result.as_dict(), as_json, _render_generate)


def _render_generate(r: dict[str, Any]) -> None:
    from rich.markup import escape

    out.print(
        escape(
            f"generate with {r['teacher']} (run {r['run_id']}): {r['requests']} requests, "
            f"{r['skipped']} already done, {r['sent']} sent, {r['refused']} refused, "
            f"{r['completion_tokens']:,} completion tokens in {r['seconds']:.1f} s "
            f"({r['completion_tokens_per_s']:,} tok/s)"
        ),
        soft_wrap=True,
    )
    out.print(
        "verdicts: " + (_counts(r["verdicts"]) or "none"),
        soft_wrap=True,
    )
    out.print(f"truncated: {r['truncated']}, repetition loops: {r['repetition']}", soft_wrap=True)
    if r["failed"]:
        out.print(
            escape("failed: " + _counts(r["failed"])),
            soft_wrap=True,
        )
    for rnd in r["rounds"]:
        out.print(
            f"round {rnd['round']}: {rnd.get('samples', 0)} problems, {rnd.get('requests', 0)} requests, "
            f"{rnd.get('skipped', 0)} already done, {rnd.get('sent', 0)} sent",
            soft_wrap=True,
        )


@app.command("import-traces")
def import_traces(
    files: Annotated[
        list[Path],
        typer.Argument(help="JSONL/JSON/Parquet files of completions.", show_default=False),
    ],
    store: StoreOpt,
    teacher: Annotated[str | None, typer.Option(help="Teacher name (default: each row's model).")] = None,
    source: Annotated[str | None, typer.Option(help="Match ids among this source's samples only.")] = None,
    records_key: Annotated[str | None, typer.Option(help="Key holding the rows in a JSON file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import completions made elsewhere as traces: parsed, verified and stored like generated ones."""
    from r1v_data.config import ImportTracesConfig, load_config
    from r1v_data.import_traces import run_import_traces

    flags = {
        "store": store,
        "files": files,
        "teacher": teacher,
        "source": source,
        "records_key": records_key,
    }
    result = run_import_traces(load_config(ImportTracesConfig, flags=flags)).as_dict()
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"read {result['read']}, imported {result['imported']}, already there {result['unchanged']}, "
        f"unmatched (quarantined) {result['unmatched']}",
        soft_wrap=True,
    )
    out.print("verdicts: " + _counts(result["verdicts"]), soft_wrap=True)
    if result["label_agreement"]:
        agree = result["label_agreement"]
        total = sum(agree.values())
        out.print(f"agreement with the file's own correctness labels: {agree.get('agree', 0)}/{total}")


@app.command()
def stats(
    store: StoreOpt,
    as_json: JsonOpt = False,
) -> None:
    """Counts by source, subject, difficulty, answer type and image sizes."""
    from r1v_data.stats import store_stats
    from r1v_data.store import Store

    result = store_stats(Store.open(store))
    emit(result, as_json, _render_stats)


_BREAKDOWNS = (
    "by_source",
    "by_subject",
    "by_difficulty",
    "by_answer_type",
    "by_image_count",
    "by_image_format",
    "quarantine_reasons",
    "trace_verdicts",
    "dropped_by_rule",
)


def _render_stats(s: dict[str, Any]) -> None:
    out.print(
        f"[bold]samples[/] {s['samples']}   [bold]images[/] {s['images']}   "
        f"[bold]quarantined[/] {s['quarantined']}   [bold]traces[/] {s['traces']}   "
        f"[bold]scores[/] {s['scores']}   [bold]answer conflicts[/] {s['answer_conflicts']}"
    )
    if s["decisions"]:
        out.print(
            f"[bold]latest filter[/]: {s['kept']} traces kept, {s['dropped']} dropped, "
            f"{s['samples_dropped']} samples dropped"
        )
    from rich.box import SIMPLE
    from rich.columns import Columns
    from rich.markup import escape

    tables = []
    for key in _BREAKDOWNS:
        if s[key]:
            table = Table(box=SIMPLE)
            table.add_column(key.removeprefix("by_").replace("_", " "), max_width=32, no_wrap=True)
            table.add_column("count", justify="right")
            for k, v in s[key].items():
                table.add_row(escape(k), str(v))
            tables.append(table)
    out.print(Columns(tables))
    sizes = s["image_sizes"]
    if sizes["width_max"] is not None:
        out.print(
            f"image width {sizes['width_min']}..{sizes['width_max']} (median {sizes['width_median']}), "
            f"height {sizes['height_min']}..{sizes['height_max']} (median {sizes['height_median']}), "
            f"{sizes['total_bytes'] / 1e6:.1f} MB"
        )


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A DuckDB query over the store's tables.", show_default=False)],
    store: StoreOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON objects.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many rows.")] = 50,
) -> None:
    """Query a store: samples, provenance, quarantine, scores, traces, decisions, runs, manifests."""
    from rich.markup import escape

    from r1v_data.store import Store

    columns, rows = Store.open(store).query(query, limit=limit)
    if as_json:
        out.print_json(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(escape(_cell(v)) for v in row))
    out.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def _register_commands() -> None:
    # commands kept in their own modules add themselves to `app` on import
    from r1v_data import cli_filter, cli_mix, cli_publish, cli_run, cli_score  # noqa: F401


_register_commands()


def main() -> None:
    from r1v_data.errors import R1VError

    try:
        app()
    except R1VError as exc:
        from rich.markup import escape

        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished parts are kept; run the command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
