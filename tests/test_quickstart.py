"""The quickstart's result (issue 16): the bundled MATH-Vision slice with its three VLMs' outputs,
run through the real commands with `pipelines/quickstart.yaml`, ends with SFT rows of
verified-correct traces, RL rows and preference pairs whose chosen trace is correct, and the
README's `load_dataset(..., 'sft')` works on it. (`make quickstart` also runs the builtin teacher
on four drawn problems; that costs minutes on 2 cores and is measured, not tested, here.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from r1v_data.sample_data import make_mathv_slice
from r1v_data.store import Store

SLICE = REPO / "r1v_data" / "sample_data" / "mathv"
RECIPE = REPO / "pipelines" / "quickstart.yaml"


def test_the_bundled_slice_is_an_unchanged_cut_of_mathvision(tmp_path: Path, shared: Path) -> None:
    ids = make_mathv_slice.build(shared / "mathv_testmini", tmp_path)
    assert len(ids) == 21
    for made in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        assert made.read_bytes() == (SLICE / made.relative_to(tmp_path)).read_bytes(), made
    assert sorted(p.name for p in SLICE.iterdir()) == sorted(p.name for p in tmp_path.iterdir())
    assert "MIT License" in (SLICE / "LICENSE.MATH-V.txt").read_text()
    assert sum(p.stat().st_size for p in SLICE.rglob("*") if p.is_file()) < 1_000_000


def test_the_quickstart_ends_with_correct_sft_rows_rl_rows_and_preference_pairs(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "shards"
    recipe = ("--config", RECIPE, "--set", f"store={store}")
    run_cli("ingest", *recipe)
    imported = json.loads(run_cli("import-traces", *sorted(SLICE.glob("outputs_*.jsonl")), "--store", store,
                                  "--source", "testmini", "--json").stdout)  # fmt: skip
    assert imported["imported"] == 63 and imported["verdicts"]["correct"] >= 20
    run_cli("filter", *recipe)
    mixed = json.loads(run_cli("mix", *recipe, "--set", f"out={out}", "--json").stdout)
    rows = mixed["rows"]
    assert rows["sft"] == imported["verdicts"]["correct"] and rows["rl"] == 59 and rows["preference"] > 0
    con = Store.open(store)
    teachers = {t for (t,) in con.query("SELECT DISTINCT teacher FROM traces")[1]}
    assert teachers == {"gemini-pro-vision", "InternLM-XComposer2-VL", "qwen-vl-max"}  # who wrote each
    datasets = pytest.importorskip("datasets")
    sft = datasets.load_dataset(str(out), "sft", split="train")  # the README's example
    pairs = datasets.load_dataset(str(out), "preference", split="train")
    verdict = dict(con.query("SELECT request_id, verdict FROM traces")[1])
    assert len(sft) == rows["sft"] and {verdict[r] for r in sft["request_id"]} == {"correct"}
    assert {verdict[r] for r in pairs["chosen_request_id"]} == {"correct"}
    assert sft[0]["images"] and sft[0]["messages"][-1]["role"] == "assistant"
