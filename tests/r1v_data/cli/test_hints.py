"""Help and hints that tell the truth (issue 16, item 5): which commands need an existing store,
a missing local path answered as a missing path, an unreachable Hub in seconds, and an empty
output kind explained by the filter that emptied it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, ingest_json, run_cli
from servers.fake_openai import FakeOpenAIProcess


@pytest.mark.parametrize("command", ["stats", "sql", "explain", "doctor", "calibrate"])
def test_help_says_the_store_must_exist(command: str) -> None:
    assert "An existing store directory" in run_cli(command, "--help").stdout


def test_a_missing_local_path_is_not_answered_with_a_hub_hint(tmp_path: Path) -> None:
    for path in ("data/missing.jsonl", "./missing", str(tmp_path / "missing.parquet")):
        proc = run_cli("ingest", path, "--store", tmp_path / "s", check=False)
        assert proc.returncode == 1 and f"source '{path}' does not exist" in proc.stderr
        assert "hf:" not in proc.stderr
    hub_like = run_cli("ingest", "someorg/someset", "--store", tmp_path / "s", check=False)
    assert "for a Hugging Face Hub dataset write hf:someorg/someset" in hub_like.stderr
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    for teacher in ("hf:./no-model", "hf:/no/such/model"):
        proc = run_cli("generate", "--store", store, "--teacher", teacher, "--limit", "1", check=False)
        assert proc.returncode == 1 and f"no model folder at {teacher[3:]}" in proc.stderr
        assert "Repo id" not in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_hub_is_said_at_once(tmp_path: Path) -> None:
    """With the network on but the Hub's host refusing (nothing listens on port 9), ingest stops
    on r1v's own check instead of the Hub clients' retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    proc = subprocess.run([str(BIN / "r1v-data"), "ingest", "hf:someorg/someset", "--store", str(tmp_path / "s")],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "cannot reach the Hugging Face Hub at 127.0.0.1" in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_kind_is_explained_by_the_filter_that_emptied_it(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "mix"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess() as teacher:  # its answers are all wrong: the filter keeps nothing
        run_cli("generate", "--store", store, "--teacher", f"openai:{teacher.url}#m")
    run_cli("filter", "--store", store, "--min-score", "3")
    run_cli("mix", "--store", store, "--out", out)
    for args in (("export", out, "--dest", tmp_path / "lf"), ("preflight", out, "--model", tmp_path)):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1 and "has no sft rows: the filter run" in proc.stderr
        assert "kept no traces" in proc.stderr and "run `r1v-data mix`" not in proc.stderr
