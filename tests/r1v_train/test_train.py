"""`r1v-train` through its CLI with tiny random models built on the fly: projector transfer,
freeze policies, SFT (also under DeepSpeed ZeRO-2 on the CPU), re-assembly onto another LLM, and
GRPO with r1v's rewards, all on shards `r1v-data mix` wrote from MATH-Vision with its images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import mathv_with_outputs, run_cli
from tiny_models import build_tiny_llama, build_tiny_vit

TINY = ["--cpu", "--set", "per_device_train_batch_size=2", "--set",
        "gradient_accumulation_steps=1", "--set", "learning_rate=1e-3", "--set", "logging_steps=1",
        "--set", "limit=8", "--json"]  # fmt: skip


def train(*args: Any) -> dict[str, Any]:
    return json.loads(run_cli(*args, tool="r1v-train").stdout)


def weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(Path(path).glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parts")
    return {"vit": build_tiny_vit(root / "vit"), "llm": build_tiny_llama(root / "llm"),
            "llm2": build_tiny_llama(root / "llm2", seed=7)}  # fmt: skip


@pytest.fixture(scope="module")
def assembled(
    parts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("vlm") / "model"
    return out, train("assemble", "--vision", parts["vit"], "--llm", parts["llm"], "--out", out, "--json")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    mathv_with_outputs(root / "store", shared, "--min-score", "3")
    run_cli(
        "mix",
        "--store",
        root / "store",
        "--out",
        root / "out",
        "--kind",
        "sft",
        "--kind",
        "rl",
        "--kind",
        "preference",
    )
    return root / "out"


def test_assemble_copies_the_parts_and_only_the_projector_trains_by_default(
    assembled: tuple[Path, dict[str, Any]], parts: dict[str, Path]
) -> None:
    out, info = assembled
    counts = info["parameters"]
    assert (
        counts["projector"] > 0
        and counts["total"] == counts["projector"] + counts["vision"] + counts["language"]
    )
    assert info["policies"]["projector"]["trainable"] == counts["projector"]
    assert info["policies"]["projector+vision"]["trainable"] == counts["projector"] + counts["vision"]
    assert info["policies"]["all"]["trainable"] == counts["total"]
    model, vit, llm = weights(out), weights(parts["vit"]), weights(parts["llm"])
    # saved checkpoints name parts `vision_tower.`, `multi_modal_projector.`, `language_model.`
    assert all(model[f"vision_tower.{k}"].equal(v) for k, v in vit.items())
    for k, v in llm.items():  # the LLM's weights, its embeddings grown by the <image> token
        mine = model[f"language_model.{k}"]
        assert (mine[: v.shape[0]] if mine.shape != v.shape else mine).equal(v), k
    projector = [k for k in model if "multi_modal_projector" in k]
    assert {k.split(".")[-2] for k in projector} == {"layer_norm", "linear_1", "linear_2"}


def test_sft_changes_only_the_projector_and_swap_keeps_it_bit_identical(
    assembled: tuple[Path, dict[str, Any]], parts: dict[str, Path], mixed: Path, tmp_path: Path
) -> None:
    vlm = assembled[0]
    ckpt = tmp_path / "ckpt"
    report = train("sft", "--model", vlm, "--data", mixed, "--output-dir", ckpt, "--max-steps", "3",
                   "--set", "deepspeed=null", "--set", "max_length=512", *TINY)  # fmt: skip
    assert report["steps"] == 3 and len(report["losses"]) == 3 and report["filter_run"]
    before, after = weights(vlm), weights(ckpt)
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)
    assert json.loads((ckpt / "r1v_train.json").read_text())["config"]["freeze"] == "projector"

    swapped = tmp_path / "swapped"
    train("assemble", "--swap-llm", ckpt, "--llm", parts["llm2"], "--out", swapped, "--json")
    new, llm2 = weights(swapped), weights(parts["llm2"])
    assert all(new[k].equal(after[k]) for k in after if "multi_modal_projector" in k or "vision_tower" in k)
    key = "model.layers.0.mlp.up_proj.weight"
    assert new[f"language_model.{key}"].equal(llm2[key])
    assert not new[f"language_model.{key}"].equal(after[f"language_model.{key}"])


def test_swap_refuses_another_hidden_size_and_bad_parts(
    assembled: tuple[Path, dict[str, Any]], parts: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    wide = tmp_path / "wide"
    config = LlamaConfig.from_pretrained(parts["llm"])
    config.hidden_size, config.intermediate_size = 256, 512
    LlamaForCausalLM(config).save_pretrained(wide)
    for f in parts["llm"].glob("tokenizer*"):
        (wide / f.name).write_bytes(f.read_bytes())
    proc = run_cli("assemble", "--swap-llm", assembled[0], "--llm", wide, "--out", tmp_path / "x",
                   tool="r1v-train", check=False)  # fmt: skip
    assert proc.returncode == 1 and "same hidden size" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("assemble", "--vision", parts["vit"], "--llm", parts["vit"], "--out", tmp_path / "y",
                   tool="r1v-train", check=False)  # fmt: skip
    assert proc.returncode == 1 and "--llm" in proc.stderr and "Traceback" not in proc.stderr
    from transformers import SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=56, patch_size=14)).save_pretrained(tmp_path / "sig")  # fmt: skip
    proc = run_cli("assemble", "--vision", tmp_path / "sig", "--llm", parts["llm"], "--out", tmp_path / "z",
                   tool="r1v-train", check=False)  # fmt: skip
    assert proc.returncode == 1 and "use an InternViT" in proc.stderr and "Traceback" not in proc.stderr


def test_the_vision_tower_can_come_from_a_vlm_checkpoint(
    assembled: tuple[Path, dict[str, Any]], parts: dict[str, Path], tmp_path: Path
) -> None:
    train("assemble", "--vision", assembled[0], "--llm", parts["llm2"], "--out", tmp_path / "m", "--json")
    new, old = weights(tmp_path / "m"), weights(assembled[0])
    towers = [k for k in old if k.startswith("vision_tower.")]
    assert towers and all(new[k].equal(old[k]) for k in towers)


def test_sft_under_deepspeed_zero2_on_cpu(
    assembled: tuple[Path, dict[str, Any]], mixed: Path, tmp_path: Path
) -> None:
    report = train("sft", "--model", assembled[0], "--data", mixed, "--output-dir", tmp_path / "ds",
                   "--max-steps", "2", "--set", "deepspeed=zero2", "--set", "freeze=all", "--set", "max_length=512", *TINY)  # fmt: skip
    assert report["steps"] == 2 and all(x == x for x in report["losses"])  # finite
    assert report["parameters"]["trainable"] == report["parameters"]["total"]


def test_grpo_two_steps_with_r1vs_rewards_on_image_rows(
    assembled: tuple[Path, dict[str, Any]], mixed: Path, tmp_path: Path
) -> None:
    from r1v_data.grading.rl_rewards import REWARD_VERSION

    report = train("grpo", "--model", assembled[0], "--data", mixed, "--output-dir", tmp_path / "grpo",
                   "--max-steps", "2", "--set", "deepspeed=null", "--set", "num_generations=2",
                   "--set", "max_completion_length=16", "--set", "freeze=projector", *TINY)  # fmt: skip
    assert report["steps"] == 2 and report["reward_version"] == REWARD_VERSION and report["use_vllm"] is False
    assert {"rewards/accuracy/mean", "rewards/think_format/mean"} <= set(report["metrics"])
    assert report["rows"] == 8 and report["rows_left_out"] >= 0
    buffered = train("grpo", "--model", assembled[0], "--data", mixed, "--output-dir", tmp_path / "ssb",
                     "--max-steps", "2", "--set", "deepspeed=null", "--set", "num_generations=2",
                     "--set", "max_completion_length=8", "--set", "selective_buffer=true", *TINY)  # fmt: skip
    assert buffered["selective_buffer"] and {"ssb/replaced", "ssb/buffer_size"} <= set(buffered["metrics"])
    saved = json.loads((tmp_path / "grpo" / "r1v_train.json").read_text())
    assert saved["reward_version"] == REWARD_VERSION and saved["config"]["rewards"] == [
        "accuracy",
        "think_format",
    ]


def test_dpo_command_trains_mpo_on_the_preference_pairs(
    assembled: tuple[Path, dict[str, Any]], mixed: Path, tmp_path: Path
) -> None:
    report = train("dpo", "--model", assembled[0], "--data", mixed, "--output-dir", tmp_path / "mpo",
                   "--max-steps", "1", "--set", "deepspeed=null", "--set", "max_length=512", *TINY)  # fmt: skip
    assert report["steps"] == 1 and report["loss_type"] == ["sigmoid", "bco_pair", "sft"]
    assert report["rows"] == 8 and "rewards/margins" in report["metrics"]


def test_training_errors_are_one_line(
    assembled: tuple[Path, dict[str, Any]], mixed: Path, tmp_path: Path
) -> None:
    cases = [
        (["sft", "--model", tmp_path / "nowhere", "--data", mixed], "model "),
        (["sft", "--model", assembled[0], "--data", tmp_path], "has no sft shards"),
        (["grpo", "--model", assembled[0], "--data", mixed, "--set", "num_generations=1"], "num_generations"),
        (["sft", "--model", assembled[0], "--data", mixed, "--set", "freeze=lora"], "freeze"),
        # 6 tokens cut into the first image's tokens: the hint names preflight
        (["sft", "--model", assembled[0], "--data", mixed, "--set", "max_length=6", "--set", "deepspeed=null",
          "--max-steps", "1", "--cpu"], "r1v-data preflight"),
    ]  # fmt: skip
    for args, expected in cases:
        proc = run_cli(*args, "--output-dir", tmp_path / "out", tool="r1v-train", check=False)
        assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr, (
            args,
            proc.stderr,
        )
