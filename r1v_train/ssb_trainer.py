"""`SelectiveSampleBufferGRPOTrainer`: TRL's GRPOTrainer with R1V2's Selective Sample Buffer in
`_generate_and_score_completions`. What the buffer does to a batch, and why, is in `ssb.py`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from r1v_train.ssb import BEHAVIOUR_KEY, BufferedGroup, SelectiveSampleBuffer, SSBStats, UnsupportedBatch


class SelectiveSampleBufferGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` with R1V2's Selective Sample Buffer (see the module docstring).

    Keyword arguments besides GRPOTrainer's:
        buffer_size: most groups kept (oldest out first).
        seed: seeds the draws (default: `args.seed`); each process adds its index.
        max_replays: a group leaves the buffer after this many replays (None: only by age).
        advantage_eps: a group is zero-advantage when every |advantage| is at most this.
        replay_logps: "behaviour" (importance ratio against the sampling policy, PPO-clipped) or
            "current" (replays treated as on-policy); see the module docstring.
    """

    def __init__(
        self,
        *args: Any,
        buffer_size: int = 256,
        seed: int | None = None,
        max_replays: int | None = None,
        advantage_eps: float = 1e-6,
        replay_logps: Literal["behaviour", "current"] = "behaviour",
        **kwargs: Any,
    ) -> None:
        if replay_logps not in ("behaviour", "current"):
            raise ValueError(f"replay_logps must be 'behaviour' or 'current', got {replay_logps!r}")
        self.replay_logps = replay_logps
        super().__init__(*args, **kwargs)
        sequence_level = (
            self.use_vllm
            and self.vllm_importance_sampling_correction
            and self.vllm_importance_sampling_mode in ("sequence_mask", "sequence_truncate")
        )
        self.ssb = SelectiveSampleBuffer(
            buffer_size,
            int(self.num_generations or 1),
            int(self._tokenizer.pad_token_id),
            seed=(self.args.seed if seed is None else seed) + self.accelerator.process_index,
            max_replays=max_replays,
            advantage_eps=advantage_eps,
            pad_to_multiple_of=int(self.pad_to_multiple_of) if self.pad_to_multiple_of else None,
            sequence_level_ratio=sequence_level,
        )
        self._ssb_warned = False

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.model is None or not self.model.training:
            return output
        device = output["prompt_ids"].device
        try:
            fresh = self.ssb.split(output)
        except UnsupportedBatch as exc:
            if not self._ssb_warned:
                warnings.warn(f"selective sample buffer off for this batch layout: {exc}", stacklevel=2)
                self._ssb_warned = True
            self._ssb_log(device, SSBStats(0, 0, len(self.ssb)))
            return output
        replay = self.ssb.select(fresh)
        informative = [g for g in fresh if not g.zero and g.weight > 0]
        if self.replay_logps == "behaviour":
            # TRL left old_per_token_logps out (ratio 1 in the loss): record the sampling policy's
            # log-probs, for the groups buffered and for the fresh rows of a batch with replays
            need = BEHAVIOUR_KEY not in output and bool(replay or informative)
        else:  # "current": replayed rows get the current policy's log-probs where TRL keeps any
            need = BEHAVIOUR_KEY in output and bool(replay)
        if self._ssb_anywhere(need, device):
            # every process runs the same forward passes over its whole batch (ZeRO-3 and FSDP
            # gather parameters in the forward), as TRL does for old_per_token_logps
            if self.replay_logps == "behaviour":
                self._ssb_policy_logps(fresh, device)
            else:  # copies: the stored groups keep what they hold
                replay = {i: replace(g, completion=dict(g.completion)) for i, g in replay.items()}
                self._ssb_policy_logps([replay.get(i, g) for i, g in enumerate(fresh)], device)
        self.ssb.add(informative)
        stats = SSBStats(sum(g.zero for g in fresh), len(replay), len(self.ssb))
        if replay:
            output = self.ssb.assemble([replay.get(i, g) for i, g in enumerate(fresh)], device)
            loss_mask = output["completion_mask"]
            if "tool_mask" in output:
                loss_mask = loss_mask * output["tool_mask"]
            output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self._ssb_log(device, stats)
        return output

    def _ssb_policy_logps(self, groups: Sequence[BufferedGroup], device: torch.device) -> None:
        """The current policy's per-token log-probs of the groups' completions, stored in each
        group as `old_per_token_logps`, computed as TRL computes `old_per_token_logps`."""
        batch = self.ssb.assemble(groups, device)
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        extras = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                  "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")  # fmt: skip
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),  # type: ignore[arg-type]
        ):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size,
                **{k: batch.get(k) for k in extras},
            )
        start = 0
        for group in groups:
            group.completion[BEHAVIOUR_KEY] = logps[start : start + group.size, : group.widths[1]]
            start += group.size

    def _ssb_anywhere(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` holds on any process (every process must call this)."""
        return bool(self.accelerator.gather(torch.tensor([int(flag)], device=device)).max().item())

    def _ssb_log(self, device: torch.device, stats: SSBStats) -> None:
        local = torch.tensor([stats.zero_groups, stats.replaced, stats.buffer_size], device=device)
        zero, replaced, size = self.accelerator.gather(local).view(-1, 3).sum(dim=0).tolist()
        metrics = self._metrics["train"]
        metrics["ssb/zero_groups"].append(float(zero))
        metrics["ssb/replaced"].append(float(replaced))
        metrics["ssb/buffer_size"].append(float(size))
