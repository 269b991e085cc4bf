"""`run_dpo`: DPO and R1V2's MPO (TRL's DPOTrainer) with a tiny assembled InternVL-style model on
the preference pairs `r1v-data mix` wrote from MATH-Vision's real images and models' outputs.

At the first step the policy equals the reference model, so every log-ratio is 0: the sigmoid
(DPO) loss is ln 2, the bco_pair loss 2 ln 2, and MPO's 0.8 / 0.2 / 1.0 mix is 1.2 ln 2 plus the
chosen answers' NLL. That pins the loss types and weights reaching TRL, and the reference model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import mathv_with_outputs, run_cli
from tiny_models import build_tiny_llama, build_tiny_vit

from r1v_data.errors import ConfigError
from r1v_train.preference import DPORunConfig, run_dpo

LN2 = math.log(2)


def weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(Path(path).glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from r1v_train.assemble import assemble

    root = tmp_path_factory.mktemp("dpo-parts")
    vit, llm = build_tiny_vit(root / "vit"), build_tiny_llama(root / "llm")
    assemble(str(vit), str(llm), root / "vlm")
    return root / "vlm"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    root = tmp_path_factory.mktemp("dpo-mix")
    mathv_with_outputs(root / "store", shared, "--min-score", "3")
    run_cli("mix", "--store", root / "store", "--out", root / "out", "--kind", "preference")
    return root / "out"


def dpo(vlm: Path, pairs: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_steps": 2, "cpu": True, "per_device_train_batch_size": 2,
                                "learning_rate": 1e-3, "logging_steps": 1, "limit": 8, "max_length": 512,
                                **overrides}  # fmt: skip
    return run_dpo(
        DPORunConfig.model_validate({"model": str(vlm), "data": pairs, "output_dir": out, **settings})
    )


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    assert set(before) == set(after)
    return {k for k in before if not before[k].equal(after[k])}


@pytest.mark.parametrize("loss", ["dpo", "mpo"])
def test_two_steps_on_image_pairs_change_the_whole_model(
    loss: str, vlm: Path, pairs: Path, tmp_path: Path
) -> None:
    report = dpo(vlm, pairs, tmp_path / loss, loss=loss, freeze="all")
    losses = report["losses"]
    assert report["steps"] == 2 and report["rows"] == 8 and len(losses) == 2
    assert all(math.isfinite(x) for x in losses)
    assert report["parameters"]["trainable"] == report["parameters"]["total"]
    first = report["step_metrics"][0]
    # policy == reference at step 1
    assert first["step"] == 1 and first["rewards/margins"] == pytest.approx(0, abs=1e-6)
    assert first["logps/chosen"] < 0 and first["logps/rejected"] < 0
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(
        report["metrics"]
    )
    if loss == "dpo":
        assert report["loss_type"] == ["sigmoid"] and losses[0] == pytest.approx(LN2, abs=1e-5)
    else:
        assert report["loss_type"] == ["sigmoid", "bco_pair", "sft"]
        assert report["loss_weights"] == [0.8, 0.2, 1.0]
        nll = losses[0] - 1.2 * LN2  # the generation (sft) term: the chosen answers' token-mean NLL
        assert 0 < nll < 2 * math.log(1000)
    diff = changed(weights(vlm), weights(tmp_path / loss))
    assert {k.split(".")[0] for k in diff} == {"vision_tower", "multi_modal_projector", "language_model"}
    saved = json.loads((tmp_path / loss / "r1v_train.json").read_text())
    assert saved["config"]["loss"] == loss and saved["config"]["beta"] == 0.1 and saved["filter_run"]
    assert (tmp_path / loss / "r1v_assembly.json").is_file()


def test_mpo_with_projector_frozen_policy_changes_only_the_projector(
    vlm: Path, pairs: Path, tmp_path: Path
) -> None:
    report = dpo(vlm, pairs, tmp_path / "proj", freeze="projector")
    assert report["steps"] == 2 and all(math.isfinite(x) for x in report["losses"])
    assert report["parameters"]["trainable"] == report["parameters"]["projector"]
    diff = changed(weights(vlm), weights(tmp_path / "proj"))
    assert diff and all(k.startswith("multi_modal_projector.") for k in diff)


def test_mpo_weights_reach_trl(vlm: Path, pairs: Path, tmp_path: Path) -> None:
    # quality loss only: bco_pair at log-ratio 0 is 2 ln 2
    report = dpo(vlm, pairs, tmp_path / "w", max_steps=1, limit=2, loss_weights=[0.0, 1.0, 0.0])
    assert report["loss_weights"] == [0.0, 1.0, 0.0] and report["losses"][0] == pytest.approx(
        2 * LN2, abs=1e-5
    )


def test_bad_settings_are_refused(vlm: Path, pairs: Path, tmp_path: Path) -> None:
    import datasets

    base = {"model": "m", "data": pairs, "output_dir": tmp_path}
    with pytest.raises(ValueError, match="loss=mpo only"):
        DPORunConfig.model_validate({**base, "loss": "dpo", "loss_weights": [1, 0, 0]})
    with pytest.raises(ValueError, match="at least 3"):
        DPORunConfig.model_validate({**base, "loss_weights": [1, 0]})
    with pytest.raises(ConfigError, match="no preference shards"):
        dpo(vlm, tmp_path, tmp_path / "none")

    # text-only pairs give a policy whose LLM is frozen nothing to learn from
    def text_only(row: dict[str, Any]) -> dict[str, Any]:
        prompt = [{**m, "content": [p for p in m["content"] if p["type"] == "text"]} for m in row["prompt"]]
        return {"images": [], "prompt": prompt}

    files = sorted(str(p) for p in (pairs / "preference" / "data").glob("*.parquet"))
    text = datasets.load_dataset("parquet", data_files=files, split="train").select(range(2)).map(text_only)
    shard = tmp_path / "text" / "preference" / "data" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    text.to_parquet(str(shard))
    with pytest.raises(ConfigError, match="no images"):
        dpo(vlm, tmp_path / "text", tmp_path / "t", freeze="projector")
