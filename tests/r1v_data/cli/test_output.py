"""What r1v-data prints where stderr and stdout are not a terminal (logs, CI, pipes): progress
lines every few seconds with done/total, rate and ETA, and tables not cut at 80 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, ingest_json
from servers.fake_openai import FakeOpenAIProcess
from tiny_models import build_tiny_llama


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _piped(*args: Any, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command with no terminal and no COLUMNS, as in a CI log."""
    clean = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([str(BIN / "r1v-data"), *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**clean, "HF_HUB_OFFLINE": "1", **env},
                          timeout=600, check=True)  # fmt: skip


def test_long_work_prints_progress_lines_without_a_terminal(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess(latency_s=0.25) as srv:
        proc = _piped("generate", "--store", store, "--teacher", f"openai:{srv.url}#m",
                      "--set", "teacher_options.concurrency=2", R1V_PROGRESS_SECONDS="1")  # fmt: skip
    lines = re.findall(r"^generate \(openai:\S+\): (\d+)/38 \(\d+%\), [\d.e+]+/s, .*$", proc.stderr, re.M)
    done = [int(n) for n in lines]
    assert len(done) >= 3 and done == sorted(done) and done[-1] == 38, proc.stderr
    assert re.search(r"ETA \d+s$", proc.stderr, re.M)  # while there was work left
    quiet = _piped("stats", "--store", store)  # short work prints no progress at all
    assert quiet.stderr == ""


def test_tables_are_not_cut_at_80_columns_when_piped(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    query = "SELECT sample_id, question, caption FROM samples WHERE caption LIKE 'A white%' ORDER BY length(caption) DESC LIMIT 1"
    table = _piped("sql", query, "--store", store).stdout
    caption = "A white picture with"
    row = next(line for line in table.splitlines() if caption in line)
    assert len(row) > 80 and re.search(r"A white picture with [^│]*\.\s*│", row)  # the whole caption
    assert "…" not in table
    score = _piped("score", "--store", store).stdout
    assert re.search(r"DRLC penalty .*min [\d.]+, median [\d.]+, mean [\d.]+, max [\d.]+", score)


def test_no_third_party_noise_in_r1v_data_output(tmp_path: Path, tiny_model: Path) -> None:
    """No weight-loading bar from transformers, and DeepSpeed (installed with the train extra) keeps
    its accelerator warning to itself in any process r1v-data runs."""
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    proc = _piped(
        "generate", "--store", store, "--teacher", f"hf:{tiny_model}", "--limit", "1", "--max-tokens", "2"
    )
    assert "Loading" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr
    pytest.importorskip("deepspeed")
    probe = "from r1v_data.cli.main import quiet_third_parties as q; {}; import deepspeed.accelerator as a; a.get_accelerator()"
    loud = subprocess.run(
        [sys.executable, "-c", probe.format("pass")], capture_output=True, text=True, check=True
    )
    quiet = subprocess.run(
        [sys.executable, "-c", probe.format("q()")], capture_output=True, text=True, check=True
    )
    assert "Setting accelerator" in loud.stdout + loud.stderr  # what r1v-data would otherwise show
    assert "Setting accelerator" not in quiet.stdout + quiet.stderr
