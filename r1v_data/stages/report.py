"""`run_report`: one self-contained HTML page about a store as of a filter run (the latest by
default), and about a pipeline workdir's iterations (`outputs/report/`). `mix` writes the same page
into its output folder (`stages/mix.py`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1v_data.config import ReportConfig
from r1v_data.errors import ConfigError
from r1v_data.outputs.report import render_pipeline, render_report, write_html
from r1v_data.store import Store


@dataclass
class ReportResult:
    out: str
    filter_run: str | None
    bytes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_report(cfg: ReportConfig) -> ReportResult:
    start = time.perf_counter()
    run = None
    if cfg.store is None:
        assert cfg.pipeline is not None  # the config insists on one of them
        html = render_pipeline(_workdir(cfg.pipeline))
    else:
        store = Store.open(cfg.store)
        run, manifest = _filter_run(store, cfg.run)
        pipeline = _workdir(cfg.pipeline) if cfg.pipeline else None
        html = render_report(store, run, manifest, cfg.drlc, examples=cfg.examples, prices=cfg.prices,
                             pipeline=pipeline)  # fmt: skip
    size = write_html(Path(cfg.out), html)
    return ReportResult(str(cfg.out), run, size, round(time.perf_counter() - start, 2))


def _filter_run(store: Store, run: str | None) -> tuple[str | None, dict[str, Any]]:
    """The filter run asked for (or the latest successful one) and its manifest; (None, {}) for a
    store never filtered, which still has a report (the funnel up to generation)."""
    if run is None:
        latest = store.latest_run("filter")
        return (latest[0], latest[1]) if latest else (None, {})
    con = store.connect()
    try:
        rows = con.sql("""SELECT m.manifest FROM runs r LEFT JOIN manifests m USING (run_id)
                          WHERE r.run_id = ? AND r.command = 'filter'""", params=[run]).fetchall()  # fmt: skip
    finally:
        con.close()
    if not rows:
        raise ConfigError(
            f"--run {run}: no filter run with that id in {store.root} (`r1v-data stats` lists runs)"
        )
    manifest = rows[0][0]
    return run, json.loads(manifest) if isinstance(manifest, str) else (manifest or {})


def _workdir(path: Path) -> Path:
    if not (path / "steps").is_dir():
        raise ConfigError(
            f"--pipeline {path}: no steps/ folder; give the workdir of `r1v-data run PIPELINE.yaml`"
        )
    return path
