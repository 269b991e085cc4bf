"""`run_dpo`: preference optimisation (DPO, or R1V2's MPO) on the pairs `r1v-data mix --kind
preference` writes.

MPO (Mixed Preference Optimization, arXiv 2411.10442; used by Skywork R1V2) is TRL's `DPOTrainer`
with three losses summed by weight: the DPO preference loss (`sigmoid`, 0.8), the BCO quality loss
(`bco_pair`, 0.2) and the generation loss, the chosen answer's token-mean NLL (`sft`, 1.0; InternVL's
`rpo_alpha=1`). "dpo" is the sigmoid loss alone. The reference model is a second copy of the model,
loaded by TRL from the same checkpoint, frozen; it costs the model's memory again (its weights, no
gradients or optimizer state).

The shards are read as written: conversational `prompt` / `chosen` / `rejected` with `{"type":
"image"}` placeholders and the images in `images`, which is the layout TRL's vision collator
(`DataCollatorForVisionPreference`) expects; it tokenizes and processes images on the fly.

TRL logs the weighted total loss, not its parts; the report keeps, besides the losses and the
last `rewards/*` metrics, per step (`step_metrics`) the reward margins and accuracies, the chosen
and rejected log-probabilities, the chosen token accuracy and the entropy. Keep `max_length` above
the longest prompt (image tokens included): the vision collator truncates without dropping rows,
so a pair can lose its answer (no learning signal), and a batch with no chosen answer tokens left
makes the `sft` term NaN (which the Trainer's logging filter hides).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from r1v_data.errors import ConfigError
from r1v_train.config import TrainConfig
from r1v_train.train import common_args, image_counts, load_model, load_shards, train_and_save

# TRL's loss names and the MPO paper's weights: preference, quality, generation
MPO_LOSSES = ("sigmoid", "bco_pair", "sft")
MPO_WEIGHTS = (0.8, 0.2, 1.0)
# DPOTrainer's per-step metrics worth keeping in the report (it logs no per-component losses)
_METRICS = ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "mean_token_accuracy",
            "entropy")  # fmt: skip


class DPORunConfig(TrainConfig):
    learning_rate: float = Field(5e-6, gt=0)
    beta: float = Field(0.1, gt=0, description="KL strength: deviation from the reference model")
    loss: Literal["dpo", "mpo"] = Field(
        "mpo", description="mpo: sigmoid + bco_pair + sft, weighted (R1V2); dpo: sigmoid only"
    )
    loss_weights: list[float] | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="MPO weights of the preference, quality and generation losses (default 0.8, 0.2, 1.0)",
    )
    max_length: int | None = Field(
        16384, ge=16, description="tokens per prompt+answer, image tokens included (None: no truncation)"
    )

    @model_validator(mode="after")
    def _weights_need_mpo(self) -> DPORunConfig:
        if self.loss_weights is not None and self.loss != "mpo":
            raise ValueError("loss_weights applies to loss=mpo only")
        return self

    def loss_types(self) -> tuple[list[str], list[float]]:
        if self.loss == "dpo":
            return ["sigmoid"], [1.0]
        return list(MPO_LOSSES), list(self.loss_weights or MPO_WEIGHTS)


def run_dpo(cfg: DPORunConfig) -> dict[str, Any]:
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    loss_type, loss_weights = cfg.loss_types()
    # the columns TRL reads; pairs with and without images may share a batch (TRL 1.16's vision
    # collator, unlike GRPO's, handles that), and text-only shards take the same path
    dataset = load_shards(cfg, "preference").select_columns(["prompt", "chosen", "rejected", "images"])
    if cfg.freeze != "all" and not any(image_counts(dataset)):
        raise ConfigError(
            f"the preference pairs have no images, so freeze={cfg.freeze} would train nothing: use freeze=all"
        )
    model, processor, counts = load_model(cfg)
    args = DPOConfig(
        **common_args(cfg),
        beta=cfg.beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        max_length=cfg.max_length,
        **cfg.trainer,
    )
    logged: list[dict[str, float]] = []  # filled while training, read when the report is written

    class _Keep(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:  # fmt: skip
            row = {k: v for k, v in (logs or {}).items() if k in _METRICS}
            if row:
                logged.append({"step": state.global_step, **row})

    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, callbacks=[_Keep()]
    )
    extra = {"loss": cfg.loss, "loss_type": loss_type, "loss_weights": loss_weights, "beta": cfg.beta,
             "step_metrics": logged}  # fmt: skip
    return train_and_save(cfg, trainer, processor, counts, len(dataset), extra)
