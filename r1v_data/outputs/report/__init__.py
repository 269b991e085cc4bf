"""`render_report`: the report of a store (and of a pipeline workdir) as one self-contained HTML
page: the funnel, think lengths, verdicts, scores, dedup/decontamination, the mixture, teacher
usage and a gallery. docs/report.md says what each section shows and why the plots are
hand-written SVG.

Modules: `data` (the connection, the temporary tables, binning), one module per group of
sections (`funnel`, `traces`, `scores`, `mixture`, `gallery`, `pipeline`), `svg` (the charts),
`images` (thumbnails), `page` (the HTML shell and escaping)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1v_data import __version__
from r1v_data.errors import ConfigError
from r1v_data.outputs.report.data import Context, prepare
from r1v_data.outputs.report.funnel import dedup, funnel
from r1v_data.outputs.report.gallery import gallery
from r1v_data.outputs.report.mixture import mixture
from r1v_data.outputs.report.page import page, section
from r1v_data.outputs.report.pipeline import pipeline_section
from r1v_data.outputs.report.scores import scores
from r1v_data.outputs.report.traces import lengths, teachers, verdicts
from r1v_data.store import Store
from r1v_data.store.store import spill_folder

REPORT_NAME = "report.html"  # in a mix folder, beside README.md
MEMORY_LIMIT = "1GB"  # DuckDB's joins and aggregations spill to disk beyond it
# mix's report keeps to mix's own DuckDB limit: with 1 GB the report was mix's peak and grew with the
# store (3M traces: 1.1 GB, when its table of traces was a temporary table held in memory)
MIX_MEMORY_LIMIT = "256MB"

# (anchor, title, what draws it); every section is drawn whatever the store holds
SECTIONS: list[tuple[str, str, Callable[[Context, Any], list[str]]]] = [
    ("funnel", "Funnel", lambda c, d: funnel(c)),
    ("lengths", "Think-token length", lambda c, d: lengths(c)),
    ("verdicts", "Verdicts and accuracy", lambda c, d: verdicts(c)),
    ("scores", "Scores", scores),
    ("dedup", "Dedup and decontamination", lambda c, d: dedup(c)),
    ("mixture", "Mixture", lambda c, d: mixture(c)),
    ("teachers", "Teacher usage", lambda c, d: teachers(c)),
    ("gallery", "Gallery", lambda c, d: gallery(c)),
]


def render_report(
    store: Store,
    run: str | None,
    filter_manifest: dict[str, Any],
    drlc: Any,
    *,
    examples: int = 24,
    prices: dict[str, tuple[float, float]] | None = None,
    mix: dict[str, Any] | None = None,
    pipeline: Path | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> str:
    """The report of `store` as of the filter run `run` (None: not filtered yet), as HTML.
    `memory_limit` caps DuckDB's buffers; beyond it they spill to disk. The table of traces is
    written to a temporary folder under `spill_folder()`, removed when the page is made."""
    with tempfile.TemporaryDirectory(prefix="r1v-report-", dir=spill_folder()) as folder:
        con = store.connect()
        try:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            prepare(store, con, run, drlc, Path(folder))
            ctx = Context(con, run, filter_manifest, examples, prices or {}, mix)
            parts = [(key, title, section(key, title, draw(ctx, drlc))) for key, title, draw in SECTIONS]
        finally:
            con.close()
    if pipeline is not None:
        parts.insert(
            0, ("pipeline", "Iterations", section("pipeline", "Iterations", pipeline_section(pipeline)))
        )
    subtitle = f"store {store.root.name}, " + (f"filter run {run}" if run else "not filtered yet")
    return page(f"r1v report: {store.root.name}", f"{subtitle}; made by r1v {__version__}", parts)


def render_pipeline(workdir: Path) -> str:
    """A workdir's report without a store: the iterations table alone."""
    parts = [("pipeline", "Iterations", section("pipeline", "Iterations", pipeline_section(workdir)))]
    return page(
        f"r1v report: {workdir.name}", f"pipeline workdir {workdir}; made by r1v {__version__}", parts
    )


def write_html(out: Path, html: str) -> int:
    """Write `html` to `out` through a temporary file beside it, renamed when whole (a crash never
    leaves half a report); the size in bytes."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file name, e.g. {out / REPORT_NAME}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    data = html.encode("utf-8")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(data)
