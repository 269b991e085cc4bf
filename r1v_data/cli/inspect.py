"""`r1v-data stats` and `r1v-data sql`: look into an existing store."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from r1v_data.cli.app import JsonOpt, StoreOpt, app, emit, out


@app.command()
def stats(
    store: StoreOpt,
    as_json: JsonOpt = False,
) -> None:
    """Counts by source, subject, difficulty, answer type and image sizes."""
    from r1v_data.stages.stats import store_stats
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
