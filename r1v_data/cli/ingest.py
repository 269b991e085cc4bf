"""`r1v-data ingest` and `r1v-data import-traces`: problems and completions into a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from r1v_data.cli.app import ConfigOpt, JsonOpt, SetOpt, StoreOpt, app, counts, emit, out, progress


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
    require_question: Annotated[
        bool | None,
        typer.Option(
            "--require-question",
            help="Quarantine rows with no text question. By default a row whose question is only in "
            "its image is kept, flagged question_in_image in its extra column.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, hash and store problems; quarantine bad rows with their reason."""
    from r1v_data.config import IngestConfig, load_config
    from r1v_data.readers.presets import parse_map_flags
    from r1v_data.stages.ingest import run_ingest

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
        "require_question": require_question,
        "mapping": parse_map_flags(map_) if map_ else None,
    }
    cfg = load_config(IngestConfig, yaml_path=config, section="ingest", sets=set_, flags=flags)
    with progress() as bar:
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
        listed = counts(dict(reasons.most_common()))
        out.print(escape(f"quarantined by reason: {listed}"), soft_wrap=True)
        out.print(
            f"inspect them with: r1v-data sql --store {escape(str(result.store))} "
            '"SELECT location, reason, detail FROM quarantine"',
            soft_wrap=True,
            highlight=False,
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
    from r1v_data.stages.import_traces import run_import_traces

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
    out.print("verdicts: " + counts(result["verdicts"]), soft_wrap=True)
    if result["label_agreement"]:
        agree = result["label_agreement"]
        total = sum(agree.values())
        out.print(f"agreement with the file's own correctness labels: {agree.get('agree', 0)}/{total}")
