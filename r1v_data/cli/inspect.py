"""`r1v-data stats` and `r1v-data sql`: look into an existing store."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from r1v_data.cli.app import ExistingStoreOpt, JsonOpt, app, console, emit, out


@app.command()
def stats(
    store: ExistingStoreOpt,
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
    for teacher, c in (s.get("cost") or {}).get("by_teacher", {}).items():
        usd = "no price configured: tokens only" if c["usd"] is None else f"${c['usd']:,.4f}"
        out.print(escape(f"{teacher}: {c['prompt_tokens']:,} prompt + {c['completion_tokens']:,} completion "
                         f"tokens, {usd}"), soft_wrap=True)  # fmt: skip
    if s.get("batches"):
        out.print("provider batches: " + ", ".join(f"{n} {k}" for k, n in s["batches"].items()))


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="One DuckDB SELECT over the store's tables.", show_default=False)
    ],
    store: ExistingStoreOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON objects.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many rows.")] = 50,
    timeout: Annotated[float, typer.Option(min=0.1, help="Stop the query after this many seconds.")] = 60.0,
) -> None:
    """Query an existing store (samples, provenance, quarantine, scores, traces, decisions, batches, runs,
    manifests) read-only: one SELECT, no access to other files or the network."""
    from rich.markup import escape

    from r1v_data.store import Store

    columns, rows, truncated = Store.open(store).user_query(query, limit=limit, timeout_s=timeout)
    if truncated:  # on stderr, so --json output stays a plain list of rows
        console.print(
            f"note: showing the first {limit} rows; the query has more (raise --limit)", highlight=False
        )
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


@app.command()
def doctor(
    store: ExistingStoreOpt,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Set damaged and foreign parts aside (damaged/), rewrite missing schema parts, delete "
            "temporary files, rebuild the catalog from runs/ and the parts. Nothing with data is deleted.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List what is wrong with a store's files (exit 1 when anything is); --repair puts it right."""
    from r1v_data.stages.doctor import run_doctor

    result = run_doctor(store, fix=repair)
    emit(result.as_dict(), as_json, _render_doctor)
    if result.remaining if repair else result.problems:
        raise typer.Exit(1)


def _render_doctor(r: dict[str, Any]) -> None:
    from rich.markup import escape

    if not r["problems"]:
        out.print(escape(f"{r['store']}: no problems found"))
    for p in r["problems"]:
        out.print(escape(f"{p['kind']}: {p['path']}: {p['detail']} (--repair: {p['fix']})"), soft_wrap=True)
    for line in r["repaired"]:
        out.print(escape(f"repaired: {line}"), soft_wrap=True)
    if r["repaired"] and not r["remaining"]:
        out.print("the store is whole again")


@app.command()
def compact(
    store: ExistingStoreOpt,
    min_parts: Annotated[
        int, typer.Option("--min-parts", min=2, help="Merge a run's small parts only when it has this many.")
    ] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Merge each run's small parts into larger ones, atomically, so queries open fewer files."""
    from r1v_data.store import Store

    with Store.open(store, write=True) as opened:
        done = opened.compact(min_parts=min_parts)
    result = {
        "store": str(store),
        "merged_parts": sum(c.sources for c in done),
        "written_parts": len(done),
        "rows": sum(c.rows for c in done),
        "by_table": {
            t: sum(c.sources for c in done if c.table == t) for t in sorted({c.table for c in done})
        },
    }
    emit(result, as_json, _render_compact)


def _render_compact(r: dict[str, Any]) -> None:
    from rich.markup import escape

    if not r["merged_parts"]:
        out.print(escape(f"{r['store']}: nothing to compact"))
        return
    by_table = ", ".join(f"{t} {n}" for t, n in r["by_table"].items())
    out.print(escape(f"merged {r['merged_parts']} small parts ({by_table}) into {r['written_parts']} "
                     f"({r['rows']} rows)"))  # fmt: skip
