"""The bundled sample, the quickstart path and the CLI surface."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ingest_json, run_cli, stats_json

from r1v_data.readers.sources import bundled_sample_dir
from r1v_data.sample_data import make_sample


def test_bundled_sample_regenerates_identically(tmp_path: Path) -> None:
    rows = make_sample.build(tmp_path)
    committed = (bundled_sample_dir() / "sample.jsonl").read_text()
    assert (tmp_path / "sample.jsonl").read_text() == committed
    assert len(rows) == 38 and {r["subject"] for r in rows} == {
        "counting",
        "chart reading",
        "geometry",
    }
    for row in rows:
        for image in row["images"]:
            assert (tmp_path / image).read_bytes() == (bundled_sample_dir() / image).read_bytes()


def test_bundled_sample_has_no_duplicate_problems() -> None:
    """The caption states all an image shows: one question with one caption is one problem (the
    seeded draw once made tri-032 and tri-034 the same right triangle)."""
    rows = [json.loads(line) for line in (bundled_sample_dir() / "sample.jsonl").read_text().splitlines()]
    problems = {(r["question"], r["caption"]) for r in rows}
    assert len(problems) == len(rows) == 38


def test_quickstart_ingest_and_stats(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = ingest_json("builtin:sample", "--store", store)
    assert (result["added"], result["quarantined"]) == (38, 0)
    assert result["sources"][0]["preset"] == "native"
    stats = stats_json(store)
    assert {k: stats[k] for k in ("samples", "quarantined", "traces")} == {
        "samples": 38,
        "quarantined": 0,
        "traces": 0,
    }
    assert stats["by_image_count"] == {"1": 36, "2": 2}
    assert stats["by_source"] == {"r1v_sample": 38}
    assert stats["by_answer_type"]["multiple_choice"] == 4
    human = run_cli("stats", "--store", store).stdout
    assert "samples 38" in human and "chart reading" in human


def test_help_version_and_train_env() -> None:
    assert "ingest" in run_cli("--help").stdout
    assert "--preset" in run_cli("ingest", "--help").stdout
    assert run_cli("--version").stdout.startswith("r1v ")
    env = json.loads(run_cli("env", "--json", tool="r1v-train").stdout)
    assert env["packages"]["torch"].startswith("2.13.0")
    assert env["cuda_available"] in (True, False)


def test_usage_errors_exit_non_zero_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("ingest", "builtin:sample", check=False)  # --store missing
    assert proc.returncode == 1 and "store is required" in proc.stderr
    proc = run_cli("ingest", "builtin:sample", "--store", tmp_path / "s", "--frobnicate", check=False)
    assert proc.returncode == 2 and "No such option" in proc.stderr
    proc = run_cli("stats", "--store", tmp_path / "nothing", check=False)
    assert proc.returncode == 1 and "no store at" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("ingest", "builtin:sample", "--store", tmp_path / "s", "--preset", "nope", check=False)
    assert proc.returncode == 1 and "unknown preset 'nope'" in proc.stderr
