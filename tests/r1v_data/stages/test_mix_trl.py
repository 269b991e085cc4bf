"""TRL trains on what `r1v-data mix` writes: the `sft` shards through SFTTrainer and the `rl`
shards through GRPOTrainer, images included, with a tiny random InternVL on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import mathv_with_outputs, run_cli
from tiny_models import build_tiny_vlm

from r1v_data.grading.rl_rewards import accuracy_rewards, format_reward

ROWS = 6  # rows of each kind fed to the trainers


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """MATH-Vision with imported traces, filtered and mixed into sft and rl shards."""
    root = tmp_path_factory.mktemp("mix_trl")
    store = mathv_with_outputs(root / "store", shared, "--min-score", "3")
    out = root / "out"
    result = json.loads(
        run_cli("mix", "--store", store, "--out", out, "--kind", "sft", "--kind", "rl", "--json").stdout
    )
    assert result["rows"]["sft"] >= ROWS and result["rows"]["rl"] >= ROWS
    return out


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


def _shards(out: Path, kind: str) -> Any:
    """The first rows of one kind, loaded as users load the shards: Parquet, images decoded."""
    import datasets

    files = sorted(str(p) for p in (out / kind / "data").glob("train-*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train").select(range(ROWS))


def _snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model: Any, before: dict[str, Any]) -> set[str]:
    import torch

    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def _sft(model: Any, processor: Any, dataset: Any, out: Path, **kw: Any) -> Any:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=512,  # keeps the images: their tokens come first, truncation cuts the trace's end
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        **kw,
    )
    trainer = SFTTrainer(model=model, processing_class=processor, train_dataset=dataset, args=args)
    trainer.train()
    return trainer


def test_vlm_processor_and_generation(vlm: Path) -> None:
    """The tiny VLM loads offline through the Auto classes and sees its image."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(vlm)
    model = AutoModelForImageTextToText.from_pretrained(vlm)
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert sum(f.stat().st_size for f in vlm.iterdir()) < 5_000_000
    chat = [[{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (90, 40), "red")},
                                          {"type": "text", "text": "What is 2+2?"}]}]]  # fmt: skip
    inputs = processor.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == model.config.image_seq_length
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        blank = model.generate(**{**inputs, "pixel_values": torch.zeros_like(inputs["pixel_values"])},
                               max_new_tokens=1, output_logits=True, return_dict_in_generate=True)  # fmt: skip
        seen = model.generate(**inputs, max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    assert not torch.allclose(blank.logits[0], seen.logits[0])  # the pixels reach the logits


def test_sft_trainer_trains_on_mixed_sft_shards(mixed: Path, vlm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dataset = _shards(mixed, "sft")
    assert all(len(r["images"]) >= 1 for r in dataset)
    processor = AutoProcessor.from_pretrained(vlm)
    # the whole model, loss on the assistant turns only (the chat template marks them)
    trainer = _sft(str(vlm), processor, dataset, tmp_path / "full", assistant_only_loss=True)
    untrained = AutoModelForImageTextToText.from_pretrained(vlm)
    changed = _changed(trainer.model, _snapshot(untrained))
    assert any(n.startswith("model.vision_tower.") for n in changed)
    assert any(n.startswith("model.multi_modal_projector.") for n in changed)
    assert any(n.startswith("model.language_model.") for n in changed)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(losses) == 3 and all(math.isfinite(v) for v in losses)
    batch = trainer.data_collator([dict(dataset[0]), dict(dataset[1])])
    image_token = trainer.model.config.image_token_id
    assert (batch["input_ids"] == image_token).sum() == 2 * trainer.model.config.image_seq_length
    assert (
        batch["pixel_values"].shape[0] == 2
        and (batch["labels"][batch["input_ids"] == image_token] == -100).all()
    )


def test_sft_trains_only_the_projector_when_the_rest_is_frozen(
    mixed: Path, vlm: Path, tmp_path: Path
) -> None:
    """R1V's first stage: vision tower and language model frozen, the MLP projector trained."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(vlm)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("model.multi_modal_projector.")
    before = _snapshot(model)
    trainer = _sft(model, AutoProcessor.from_pretrained(vlm), _shards(mixed, "sft"), tmp_path / "proj")
    assert trainer.state.global_step == 3
    changed = _changed(model, before)
    assert changed == {n for n in before if n.startswith("model.multi_modal_projector.")}
    assert len(changed) == 6  # layer_norm, linear_1, linear_2: weights and biases


def think_format(completions: list[list[dict[str, str]]], **kwargs: Any) -> list[float]:
    """TRL's reward signature over `rl_rewards.format_reward`: a closed <think>, then an answer."""
    return [format_reward(c) for c in completions]


def accuracy(
    completions: list[list[dict[str, str]]],
    solution: list[str],
    answer_type: list[str | None],
    options: list[list[str] | None],
    **kwargs: Any,
) -> list[float]:
    """TRL's reward signature over `rl_rewards.accuracy_rewards`: the rl row's columns arrive as
    keyword lists, one value per completion."""
    return accuracy_rewards(completions, solution, answer_type, options)


def test_reward_functions_read_the_rl_columns() -> None:
    right = [{"role": "assistant", "content": "<think>30 + 12 = 42</think> \\boxed{42}"}]
    wrong = [{"role": "assistant", "content": "<think>hmm</think> \\boxed{B}"}]
    bare = [{"role": "assistant", "content": "42"}]
    got = accuracy([right, wrong, bare], solution=["42", "C", "42"], answer_type=["integer", "multiple_choice", None],
                   options=[[], ["1", "2", "3"], []])  # fmt: skip
    assert got == [1.0, 0.0, 1.0]
    assert think_format([right, wrong, bare]) == [1.0, 1.0, 0.0]


def test_grpo_trainer_trains_on_mixed_rl_shards(mixed: Path, vlm: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    dataset = _shards(mixed, "rl")
    seen: list[dict[str, Any]] = []

    def recorded_accuracy(completions: list, **kwargs: Any) -> list[float]:
        seen.append(
            {k: v for k, v in kwargs.items() if k not in ("trainer_state", "log_extra", "log_metric")}
        )
        return accuracy(completions, **kwargs)

    recorded_accuracy.__name__ = "accuracy"

    def variety(completions: list, **kwargs: Any) -> list[float]:
        # A random model earns no accuracy or format reward: without this one the advantages are
        # all zero and no gradient would show that the loss reaches the weights.
        return [len(set(c[0]["content"])) / 100 for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=16,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
    )
    trainer = GRPOTrainer(
        model=str(vlm),
        reward_funcs=[recorded_accuracy, think_format, variety],
        args=args,
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(vlm),
    )
    projected: list[int] = []  # images through the projector, per forward pass
    trainer.model.model.multi_modal_projector.register_forward_hook(
        lambda m, i, o: projected.append(o.shape[0])
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert projected and all(n > 0 for n in projected)  # generation and the loss both saw the images
    logged = [h for h in trainer.state.log_history if "rewards/accuracy/mean" in h]
    assert len(logged) == 2 and all("rewards/think_format/mean" in h for h in logged)
    assert all(math.isfinite(h["loss"]) for h in logged) and any(h["grad_norm"] > 0 for h in logged)
    untrained = AutoModelForImageTextToText.from_pretrained(vlm)
    assert _changed(trainer.model, _snapshot(untrained))
    # every column of the rl rows reaches the reward functions, one value per completion
    assert seen and all(len(call["solution"]) == 2 for call in seen)
    assert {"solution", "answer_type", "options", "images", "sample_id"} <= set(seen[0])
    reference = dict(zip(dataset["id"], dataset["solution"], strict=True))
    assert all(
        reference[i] == sol for call in seen for i, sol in zip(call["id"], call["solution"], strict=True)
    )
