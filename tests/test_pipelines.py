"""Every recipe in pipelines/ is valid for the commands it configures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from r1v_data.config import FilterConfig, GenerateConfig, IngestConfig, MixConfig, ScoreConfig, load_config

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml"))
SECTIONS = {
    "ingest": IngestConfig,
    "score": ScoreConfig,
    "generate": GenerateConfig,
    "filter": FilterConfig,
    "mix": MixConfig,
}
SHARED_BLOCKS = {"drlc"}  # YAML anchors referenced by the sections


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_each_section_loads_with_its_commands_config(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    if "workdir" in doc:  # a `r1v-data run` pipeline: its steps expand, each a known command
        from r1v_data.stages.pipeline import load_pipeline

        _, steps = load_pipeline(path)
        assert steps and all(s.argv[0] in ("r1v-data", "r1v-train") for s in steps)
        return
    unknown = set(doc) - set(SECTIONS) - SHARED_BLOCKS
    assert not unknown, f"{path.name}: sections no command reads: {unknown}"
    for section in set(doc) & set(SECTIONS):
        cfg = load_config(SECTIONS[section], yaml_path=path, section=section)
        assert cfg.store == Path(doc[section]["store"])


def test_the_alcotd_recipe_generates_adaptively() -> None:
    path = next(p for p in PIPELINES if p.name == "alcotd.yaml")
    generate = load_config(GenerateConfig, yaml_path=path, section="generate")
    score = load_config(ScoreConfig, yaml_path=path, section="score")
    assert generate.adaptive_length and generate.rounds > 1
    assert generate.drlc == score.drlc  # the preview shows what generate will set


def test_the_iterative_sft_recipe_is_dt() -> None:
    path = next(p for p in PIPELINES if p.name == "iterative_sft.yaml")
    cfg = load_config(FilterConfig, yaml_path=path, section="filter")
    assert cfg.iteration == 2 and cfg.schedule[cfg.iteration - 1] == 3 and cfg.errors_from
    assert load_config(MixConfig, yaml_path=path, section="mix").store == cfg.store


# ---- malformed pipelines: one line, exit 1, what to do (issue 14, item 8) -----------------------
STEP = "{name: stats, run: 'r1v-data stats --store {workdir}/s'}"
MALFORMED = {
    "a list": ("- a\n- b\n", []),
    "a scalar": ("just words\n", []),
    "empty": ("", []),
    "not YAML": ("workdir: [\n", []),
    "not UTF-8": (b"workdir: w\xff\xfe\n", []),
    "no workdir": (f"setup: [{STEP}]\n", []),
    "workdir not text": (f"workdir: [a, b]\nsetup: [{STEP}]\n", []),
    "unknown key": (f"workdir: w\nsetpu: [{STEP}]\n", []),
    "no steps": ("workdir: w\n", []),
    "steps a mapping": (f"workdir: w\nsetup: {STEP}\n", []),
    "steps a number": ("workdir: w\niterate: 5\n", []),
    "a step a string": ("workdir: w\niterate:\n  - r1v-data stats\n", []),
    "a step a list": ("workdir: w\nsetup:\n  - [stats, r1v-data stats]\n", []),
    "a step without run": ("workdir: w\nsetup:\n  - {name: stats}\n", []),
    "a step's unknown key": ("workdir: w\nsetup:\n  - {name: a, run: r1v-data stats, form: 2}\n", []),
    "a step's name a path": ("workdir: w\nsetup:\n  - {name: ../../x, run: r1v-data stats}\n", []),
    "a step's run a list": ("workdir: w\nsetup:\n  - {name: a, run: [r1v-data, stats]}\n", []),
    "a step's run unquoted": ('workdir: w\nsetup:\n  - {name: a, run: "r1v-data stats --store \'x"}\n', []),
    "a step's from not a number": (
        "workdir: w\niterate:\n  - {name: a, run: r1v-data stats, from: two}\n",
        [],
    ),
    "vars a list": (f"workdir: w\nvars: [a, b]\nsetup: [{STEP}]\n", []),
    "a var a mapping": (f"workdir: w\nvars: {{a: {{b: 1}}}}\nsetup: [{STEP}]\n", []),
    "a var's name a number": (f"workdir: w\nvars: {{1: x}}\nsetup: [{STEP}]\n", []),
    "a lone brace": ("workdir: w\nsetup:\n  - {name: a, run: 'r1v-data stats {'}\n", []),
    "a positional field": ("workdir: w\nsetup:\n  - {name: a, run: 'r1v-data stats {0}'}\n", []),
    "an attribute field": (
        "workdir: w\nsetup:\n  - {name: a, run: 'r1v-data stats {workdir.__class__}'}\n",
        [],
    ),
    "an undefined name": ("workdir: w\nsetup:\n  - {name: a, run: 'r1v-data stats {nope}'}\n", []),
    "per_iteration not lists": (f"workdir: w\nper_iteration: {{lr: 0.1}}\niterate: [{STEP}]\n", []),
    "per_iteration empty": (f"workdir: w\nper_iteration: {{lr: []}}\niterate: [{STEP}]\n", []),
    "iterations text": (f"workdir: w\niterations: four\niterate: [{STEP}]\n", []),
    "iterations negative": (f"workdir: w\niterations: -1\niterate: [{STEP}]\n", []),
    "iterations a fraction": (f"workdir: w\niterations: 2.5\niterate: [{STEP}]\n", []),
    "--set iterations=abc": (f"workdir: w\niterate: [{STEP}]\n", ["iterations=abc"]),
    "--set without =": (f"workdir: w\nsetup: [{STEP}]\n", ["iterations"]),
    "--set unknown key": (f"workdir: w\nsetup: [{STEP}]\n", ["iteration=2"]),
    "--set unknown var": (f"workdir: w\nvars: {{teacher: t}}\nsetup: [{STEP}]\n", ["vars.teachr=x"]),
}


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_pipeline_is_one_error_line(kind: str, tmp_path: Path) -> None:
    text, sets = MALFORMED[kind]
    raw = text if isinstance(text, bytes) else text.encode()
    path = tmp_path / "p.yaml"
    path.write_bytes(raw.replace(b"workdir: w", f"workdir: {tmp_path / 'w'}".encode()))
    args = [a for s in sets for a in ("--set", s)]
    line = _one_error_line(run_cli("run", path, *args, check=False))
    assert str(path) in line or "--set" in line
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "w").exists()  # nothing ran


@pytest.mark.parametrize(
    ("name", "wanted"),
    [("a folder", "cannot read"), ("missing", "cannot read")],
)
def test_an_unreadable_pipeline_is_one_error_line(name: str, wanted: str, tmp_path: Path) -> None:
    path = tmp_path / ("a folder" if name == "a folder" else "missing.yaml")
    if name == "a folder":
        path.mkdir()
    assert wanted in _one_error_line(run_cli("run", path, check=False))


def test_typos_name_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"workdir: w\nvars: {{teacher: t}}\nsetpu: [{STEP}]\n")
    assert "did you mean 'setup'" in _one_error_line(run_cli("run", path, check=False))
    path.write_text(f"workdir: w\nvars: {{teacher: t}}\nsetup: [{STEP}]\n")
    for typo, near in [("vars.teachr=x", "vars.teacher"), ("iteration=2", "iterations")]:
        assert f"did you mean {near!r}" in _one_error_line(run_cli("run", path, "--set", typo, check=False))


def test_a_workdir_that_is_a_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "w").write_text("a file\n")
    path = tmp_path / "p.yaml"
    path.write_text(f"workdir: {tmp_path / 'w'}\nsetup: [{STEP}]\n")
    assert "workdir" in _one_error_line(run_cli("run", path, check=False))


def test_a_key_in_a_step_is_never_stored_or_printed(tmp_path: Path) -> None:
    key = "Pw9" + "kT4q" * 6
    path = tmp_path / "p.yaml"
    path.write_text(
        f"workdir: {tmp_path / 'w'}\nvars: {{teacher: 'openai:http://me:{key}@127.0.0.1:9/v1#m'}}\n"
        "setup:\n  - {name: ingest, run: 'r1v-data ingest builtin:sample --store {workdir}/s'}\n"
        "  - {name: distil, run: 'r1v-data generate --store {workdir}/s --teacher {teacher}'}\n"
    )
    plan = run_cli("run", path, "--dry-run", "--json")
    failed = run_cli("run", path, check=False)  # the step runs, and fails: nothing answers there
    assert failed.returncode == 1 and "http://me:***@127.0.0.1" in plan.stdout
    stored = "".join(p.read_text() for p in (tmp_path / "w" / "steps").iterdir())
    assert "http://me:***@" in stored and "nothing answers" in stored
    assert key not in plan.stdout + plan.stderr + failed.stdout + failed.stderr + stored
