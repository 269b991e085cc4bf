"""The iterations of a pipeline workdir (`r1v-data run`), like the paper's Table 2: per t, the
reward threshold τ, the rows trained on, the size of the error set E_(t−1) and the evaluation
accuracy. Read from the steps' manifests (`WORKDIR/steps/*.json`: each holds its command's JSON
result), so it needs no store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1v_data.errors import ConfigError
from r1v_data.outputs.report import svg
from r1v_data.outputs.report.page import none, table

COLUMNS = ["t", "τ", "traces kept", "rows trained on", "E(t−1) samples", "eval answers", "eval accuracy"]


def iterations(workdir: Path) -> list[dict[str, Any]]:
    """One dict per iteration t, from the finished steps named filter, mix and evaluate."""
    steps = workdir / "steps"
    if not steps.is_dir():
        raise ConfigError(f"{workdir} has no steps/ folder: give the workdir of `r1v-data run PIPELINE.yaml`")
    rows: dict[int, dict[str, Any]] = {}
    for path in sorted(steps.glob("*.json")):
        record = _read(path)
        t, result = record.get("t"), record.get("result")
        if t is None or record.get("status") != "ok" or not isinstance(result, dict):
            continue
        _merge(rows.setdefault(int(t), {"t": int(t)}), str(record.get("step")), result)
    return [rows[t] for t in sorted(rows)]


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _merge(row: dict[str, Any], step: str, result: dict[str, Any]) -> None:
    if step == "filter":
        row.update(tau=result.get("tau"), kept=result.get("kept"), error_set=result.get("error_set"))
    elif step == "mix":
        row["rows"] = sum((result.get("rows") or {}).values())
    elif step == "evaluate":
        verdicts = result.get("verdicts") or {}
        answered = sum(verdicts.values())
        row["answers"] = answered
        row["accuracy"] = round(verdicts.get("correct", 0) / answered, 4) if answered else None


def pipeline_section(workdir: Path) -> list[str]:
    rows = iterations(workdir)
    if not rows:
        return [none(f"No finished iteration in {workdir}/steps yet.")]
    cells = [[r["t"], r.get("tau"), r.get("kept"), r.get("rows"), r.get("error_set"), r.get("answers"),
              None if r.get("accuracy") is None else f"{r['accuracy']:.1%}"] for r in rows]  # fmt: skip
    chart = svg.bars(
        [(f"t = {r['t']}", 100 * (r.get("accuracy") or 0)) for r in rows], "evaluation accuracy", "%"
    )
    return [chart, table(COLUMNS, cells, [True] * 6 + [False])]
