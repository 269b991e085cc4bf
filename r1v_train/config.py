"""Configuration of `r1v-train sft` and `r1v-train grpo`: the paper's settings are the shipped
recipes (`r1v_train/recipes/*.yaml`); a user's YAML, `--set key=value` and flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from r1v_data.config import Strict

RECIPES = Path(__file__).parent / "recipes"
DEEPSPEED = {"zero2": RECIPES / "ds_zero2.json", "zero3": RECIPES / "ds_zero3.json"}


class TrainConfig(Strict):
    model: str = Field(description="an assembled model (`r1v-train assemble`) or a checkpoint")
    data: Path = Field(description="a folder written by `r1v-data mix`")
    output_dir: Path
    freeze: Literal["projector", "projector+vision", "all"] = "projector"
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="stop after this many steps (-1: the epochs decide)")
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = True
    bf16: bool = Field(True, description="bfloat16 training; always off on CPU")
    cpu: bool = Field(False, description="train on the CPU even when a GPU is present")
    deepspeed: str | None = Field(None, description="zero2 | zero3 (the shipped configs) | a JSON path")
    limit: int | None = Field(None, gt=0, description="train on the first N rows only")
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    trainer: dict[str, Any] = Field(default_factory=dict, description="more TRL config fields, passed as is")

    def deepspeed_config(self) -> str | None:
        if self.deepspeed is None:
            return None
        path = DEEPSPEED.get(self.deepspeed, Path(self.deepspeed))
        return str(path)


class SFTRunConfig(TrainConfig):
    max_length: int = Field(16384, ge=1, description="tokens per row, image tokens included")
    assistant_only_loss: bool | None = Field(
        None, description="loss on the assistant turn only (default: when the chat template marks it)"
    )


class GRPORunConfig(TrainConfig):
    num_generations: int = Field(8, ge=2)
    temperature: float = Field(1.0, gt=0)
    max_completion_length: int = Field(8192, ge=1)
    rewards: list[Literal["accuracy", "think_format"]] = Field(
        default_factory=lambda: ["accuracy", "think_format"], min_length=1
    )
    reward_weights: list[float] | None = None
    use_vllm: bool | None = Field(
        None,
        description="generate with vLLM (colocated); default: when vllm is installed and a GPU is present",
    )
    selective_buffer: bool = Field(
        False, description="R1V2's Selective Sample Buffer: zero-advantage groups replaced by buffered ones"
    )
    buffer_size: int = Field(256, ge=1, description="groups the buffer keeps (oldest leave first)")
    max_replays: int | None = Field(None, ge=1, description="retire a buffered group after this many replays")
    replay_logps: Literal["behaviour", "current"] = Field(
        "behaviour",
        description="replays' old log-probs: those of the policy that sampled them, or current ones",
    )
    modality: Literal["auto", "images", "text"] = Field(
        "auto",
        description="rows to train on: TRL cannot batch text-only prompts with image prompts, so "
        "auto keeps the image rows when there are any",
    )
