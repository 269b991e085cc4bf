"""Every recipe in pipelines/ is valid for the commands it configures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
