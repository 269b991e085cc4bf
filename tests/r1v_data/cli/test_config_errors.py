"""A wrong `--set` or `--config` is one line on stderr, exit 1, saying what to change (issue 14,
item 8): values that are not YAML, wrong types, keys with a typo (the nearest key named), files
that are not YAML, not UTF-8 or not there."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

MIX = ("mix", "--store", "{tmp}/s", "--out", "{tmp}/o")
GENERATE = ("generate", "--store", "{tmp}/s")
CASES = {
    "a list cut short": (MIX, ["--set", "shard_bytes=[1,"], "not valid YAML"),
    "a mapping cut short": (MIX, ["--set", "recipe={a: b"], "not valid YAML"),
    "a tab in a value": (MIX, ["--set", "license=a:\tb: c"], "--set license"),
    "text for a number": (MIX, ["--set", "shard_bytes=abc"], "shard_bytes"),
    "a list for a flag": (MIX, ["--set", "overwrite=[1]"], "overwrite"),
    "a typo": (MIX, ["--set", "shard_byte=4096"], "did you mean 'shard_bytes'"),
    "a nested typo": (GENERATE, ["--set", "sampling.temprature=1"], "did you mean 'sampling.temperature'"),
    "a value as a section": (GENERATE, ["--set", "sampling=3", "--set", "sampling.top_p=1"], "not a mapping"),
    "no key": (MIX, ["--set", "=1"], "expected KEY=VALUE"),
    "an empty part": (MIX, ["--set", "sampling..x=1"], "--set sampling..x"),
    "no value": (MIX, ["--set", "shard_bytes"], "expected KEY=VALUE"),
    "config not YAML": (MIX, ["--config", "{tmp}/bad.yaml"], "not valid YAML"),
    "config not UTF-8": (MIX, ["--config", "{tmp}/latin1.yaml"], "not UTF-8"),
    "config a list": (MIX, ["--config", "{tmp}/list.yaml"], "mapping"),
    "config a folder": (MIX, ["--config", "{tmp}"], "cannot read config"),
    "config missing": (MIX, ["--config", "{tmp}/nope.yaml"], "cannot read config"),
    "config typo": (MIX, ["--config", "{tmp}/typo.yaml"], "did you mean 'kinds'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_setting_is_one_error_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("mix:\n  kinds: [sft\n  out: x\n")
    (tmp_path / "latin1.yaml").write_bytes("mix:\n  license: caf\xe9\n".encode("latin-1"))
    (tmp_path / "list.yaml").write_text("- mix\n- out\n")
    (tmp_path / "typo.yaml").write_text("mix:\n  kind: [sft]\n")
    command, args, wanted = CASES[case]
    proc = run_cli(*(a.replace("{tmp}", str(tmp_path)) for a in (*command, *args)), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert wanted in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()  # nothing was written
