"""`run_sft` and `run_grpo`: TRL's trainers on the shards `r1v-data mix` writes.

Both load the model and its processor, apply the freeze policy (the paper trains the projector
first), read one kind of shards with `datasets` (images decoded), train, and save the model, the
processor and `r1v_train.json`: the config, the data's filter run, the parameter counts, the
losses, and for GRPO the reward version. The GRPO rewards are r1v's own (`r1v_data.grading.rl_rewards`):
answer accuracy through the verifier that curated the data, and the `<think>` format.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from r1v_data.errors import ConfigError
from r1v_train.assemble import freeze
from r1v_train.config import GRPORunConfig, SFTRunConfig, TrainConfig


def run_sft(cfg: SFTRunConfig) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    model, processor, counts = load_model(cfg)
    dataset = load_shards(cfg, "sft")
    template = processor.chat_template or ""
    assistant_only = cfg.assistant_only_loss
    if assistant_only is None:
        assistant_only = "{% generation %}" in template
    args = SFTConfig(
        **common_args(cfg), max_length=cfg.max_length, assistant_only_loss=assistant_only, **cfg.trainer
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    return train_and_save(
        cfg, trainer, processor, counts, len(dataset), {"assistant_only_loss": assistant_only}
    )


def run_grpo(cfg: GRPORunConfig) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer

    from r1v_data.grading.rl_rewards import REWARD_VERSION

    model, processor, counts = load_model(cfg)
    dataset, left_out = _rl_rows(load_shards(cfg, "rl"), cfg.modality)
    use_vllm = _vllm_available(cfg) if cfg.use_vllm is None else cfg.use_vllm
    args = GRPOConfig(
        **common_args(cfg),
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
        reward_weights=cfg.reward_weights,
        use_vllm=use_vllm,
        **({"vllm_mode": "colocate"} if use_vllm else {}),
        **cfg.trainer,
    )
    rewards = [REWARDS[name] for name in cfg.rewards]
    trainer_class, buffer = GRPOTrainer, {}
    if cfg.selective_buffer:  # R1V2: keep a gradient when a whole group scores alike
        from r1v_train.ssb_trainer import SelectiveSampleBufferGRPOTrainer

        trainer_class = SelectiveSampleBufferGRPOTrainer
        buffer = {"buffer_size": cfg.buffer_size, "seed": cfg.seed, "max_replays": cfg.max_replays,
                  "replay_logps": cfg.replay_logps}  # fmt: skip
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        **buffer,
    )
    extra = {"reward_version": REWARD_VERSION, "rewards": cfg.rewards, "rows_left_out": left_out,
             "selective_buffer": cfg.selective_buffer, "use_vllm": use_vllm}  # fmt: skip
    return train_and_save(cfg, trainer, processor, counts, len(dataset), extra)


def _vllm_available(cfg: TrainConfig) -> bool:
    import importlib.util

    import torch

    return not cfg.cpu and torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


# --------------------------------------------------------------------------------------- rewards
def accuracy(completions: list[Any], solution: list[str], **kwargs: Any) -> list[float]:
    """r1v's verifier on the completion's final answer (choices use the row's options)."""
    from r1v_data.grading.rl_rewards import accuracy_rewards

    return accuracy_rewards(completions, solution, kwargs.get("answer_type"), kwargs.get("options"))


def think_format(completions: list[Any], **kwargs: Any) -> list[float]:
    """A closed `<think>` block, then a final answer."""
    from r1v_data.grading.rl_rewards import format_reward

    return [format_reward(c) for c in completions]


REWARDS = {"accuracy": accuracy, "think_format": think_format}


# ----------------------------------------------------------------------------------------- parts
def load_model(cfg: TrainConfig) -> tuple[Any, Any, dict[str, int]]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        model = AutoModelForImageTextToText.from_pretrained(cfg.model)
        processor = AutoProcessor.from_pretrained(cfg.model)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {cfg.model}: {str(exc).strip().splitlines()[0][:300]}") from exc
    return model, processor, freeze(model, cfg.freeze)


def load_shards(cfg: TrainConfig, kind: str) -> Any:
    import datasets

    from r1v_data.outputs.shards import find_shards

    files = [str(p) for p in find_shards(cfg.data, kind)]
    dataset = datasets.load_dataset("parquet", data_files=files, split="train")
    return dataset.select(range(min(cfg.limit, len(dataset)))) if cfg.limit else dataset


def _rl_rows(dataset: Any, modality: str) -> tuple[Any, int]:
    """Image rows or text rows, not both: TRL 1.16's GRPO hands text-only prompts' missing images
    to the processor as None when a batch mixes them, and fails."""
    with_images = [i for i, n in enumerate(image_counts(dataset)) if n]
    if modality == "auto":
        modality = "images" if with_images else "text"
    keep = with_images if modality == "images" else sorted(set(range(len(dataset))) - set(with_images))
    if not keep:
        raise ConfigError(f"no {modality} rows in the rl shards")
    return dataset.select(keep), len(dataset) - len(keep)


def image_counts(dataset: Any) -> list[int]:
    """Images per row, read from the Arrow list lengths: no image is decoded."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["images"]).to_pylist()


def common_args(cfg: TrainConfig) -> dict[str, Any]:
    import torch

    cpu = cfg.cpu or not torch.cuda.is_available()
    if cfg.deepspeed and "RANK" not in os.environ:
        # a single process without a launcher: DeepSpeed would otherwise look for MPI
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
    return {
        "output_dir": str(cfg.output_dir),
        "learning_rate": cfg.learning_rate,
        "weight_decay": cfg.weight_decay,
        "warmup_steps": cfg.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "bf16": cfg.bf16 and not cpu,
        "use_cpu": cpu,
        "deepspeed": cfg.deepspeed_config(),
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "no",  # the final model is saved below, with its provenance
        "report_to": [],
    }


def train_and_save(cfg: TrainConfig, trainer: Any, processor: Any, counts: dict[str, int], rows: int,
           extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    start = time.perf_counter()
    try:
        trainer.train()
    except ValueError as exc:
        if "image" in str(exc).lower() and "token" in str(exc).lower():
            raise ConfigError(
                f"{str(exc).strip().splitlines()[0][:200]}: a row's images do not fit max_length, or its image "
                "placeholders do not match its images; raise --set max_length or check the shards with "
                f"`r1v-data preflight {cfg.data} --model {cfg.model}`"
            ) from exc
        raise
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    assembly = Path(cfg.model) / "r1v_assembly.json"
    if assembly.is_file():  # the image size and provenance travel with every checkpoint
        shutil.copy(assembly, out / assembly.name)
    logs = trainer.state.log_history
    data_manifest = Path(cfg.data) / "manifest.json"
    report = {
        "output_dir": str(out),
        "steps": trainer.state.global_step,
        "rows": rows,
        "parameters": counts,
        "losses": [log["loss"] for log in logs if "loss" in log],
        "metrics": {k: v for log in logs for k, v in log.items() if k.startswith(("rewards/", "ssb/"))},
        "seconds": round(time.perf_counter() - start, 2),
        "filter_run": json.loads(data_manifest.read_text()).get("filter_run")
        if data_manifest.is_file()
        else None,
        **extra,
    }
    (out / "r1v_train.json").write_text(
        json.dumps({**report, "config": cfg.model_dump(mode="json")}, indent=2, default=str) + "\n"
    )
    return report
