"""R1V2's Selective Sample Buffer (SSB) for TRL's GRPO (arXiv 2504.16656).

In GRPO a group whose completions all earn the same reward has zero advantage and gives no policy
gradient ("vanishing advantages"); late in training most groups can be like that. SSB keeps the
groups of earlier steps whose advantages were non-zero and, when a batch has zero-advantage groups,
puts buffered groups in their place, drawn with probability proportional to their mean |advantage|,
so every step keeps an informative gradient.

`SelectiveSampleBufferGRPOTrainer` (`ssb_trainer.py`) is `trl.GRPOTrainer` (TRL 1.16) with one method overridden:
`_generate_and_score_completions`, the narrowest one that returns the scored batch dict
(`prompt_ids`, `completion_ids`, masks, `advantages`, multimodal tensors, ...). `_prepare_inputs`
then shuffles and splits that dict as usual, so replayed groups go through TRL's own batching.

How a batch is changed, one generation batch at a time (training only; evaluation is untouched):

- The process's rows are cut into groups of `num_generations` consecutive rows (TRL's sampler
  repeats each prompt that many times in a row). A group is zero-advantage when every |advantage|
  is at most `advantage_eps`.
- Zero-advantage groups are replaced by groups drawn without replacement from the buffer, as many
  as it can give (buffered groups of a different layout, e.g. text-only against image groups,
  are not eligible). Only groups buffered at earlier steps are drawn.
- This batch's non-zero groups then enter the buffer, oldest out first past `buffer_size` groups;
  with `max_replays` a group leaves after being replayed that many times.
- Padding: each group keeps its rows trimmed to its own widths (prompt columns whose mask is zero in
  every row dropped on the left, completion columns dropped on the right); the new batch is padded
  again to the widest group: prompts (`prompt_ids`, `prompt_mask`) on the left, completions and all
  per-token tensors (`completion_ids`/`_mask`, `tool_mask`, `old_`/`ref_`/`sampling_per_token_logps`,
  token-level `importance_sampling_ratio`) on the right, `token_type_ids`/`mm_token_type_ids` (they
  span prompt + completion) split at the prompt width and padded on each side.
- Multimodal extras travel with their group: TRL's own `split_pixel_values_by_grid` cuts
  `pixel_values`, `image_grid_thw`, `image_position_ids`, `pixel_attention_mask`, `spatial_shapes`
  and `image_sizes` per row (as `_prepare_inputs` does for shuffling), `num_images` and `num_tiles`
  are per-row lists, and `unsplit_pixel_values_by_grid` joins them again. A per-row image tensor
  that is the same in every row of a group (the usual case: one prompt, G completions) is stored
  once. A batch with a key SSB does not know, or image tensors it cannot assign to rows, is passed
  through unchanged (a warning, once): buffering only what is known to be safe.
- `num_items_in_batch` (the token normaliser of the `dapo`/`cispo`/`vespo` losses) is recomputed.

Off-policy replays (`replay_logps`). A replayed group was sampled by an older policy. TRL's loss
is the clipped surrogate on `ratio = exp(logp_now - old_per_token_logps)`; when the batch has no
`old_per_token_logps` (one generation per optimiser step, no vLLM) TRL uses `logp_now.detach()`,
i.e. ratio 1 for every row. Two choices:

- `"behaviour"` (default): the ratio of a replayed row is taken against the policy that sampled it,
  PPO-style. When a group is buffered SSB keeps that policy's per-token log-probs: TRL's
  `old_per_token_logps` when the batch has them (steps per generation > gradient accumulation,
  `num_iterations` > 1, vLLM), otherwise from one extra no-grad forward pass over the batch, the
  pass TRL itself makes in those cases (every process makes it when any needs it: ZeRO-3 and FSDP
  gather parameters in the forward). A batch that gets replays then carries `old_per_token_logps`
  for every row: the fresh rows the current policy's (ratio 1, as without SSB) and the replayed
  rows their behaviour log-probs, so the clip (`epsilon`) bounds how far a stale sample moves the
  policy, and off-policy sequence masking applies when it is on. A replay whose policy has
  drifted far past the clip range gives (almost) no gradient: keep `buffer_size` modest or set
  `max_replays` so replays stay recent.
- `"current"`: replayed rows count as on-policy (ratio 1): no log-probs are recorded; when the
  batch has `old_per_token_logps` (TRL computed them), the replayed rows' are recomputed with the
  current policy at replay time. Cheaper, always a gradient, but the replayed samples' gradient
  is not importance-corrected (biased toward the old policy's samples).

Either way vLLM's `sampling_per_token_logps`/`importance_sampling_ratio` and the reference model's
`ref_per_token_logps` are stored with the group; the latter stay valid for a fixed reference model
(with `sync_ref_model` they are those of the reference at buffering time). Stored advantages are
replayed as computed. The buffer lives in CPU memory, per process, and is not saved in checkpoints
(a resumed run starts with it empty).

Logged per generation batch (summed over processes): `ssb/zero_groups` (zero-advantage groups
before replacement), `ssb/replaced`, `ssb/buffer_size` (groups held after the update).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

# per-token tensors: pad value (None: the tokenizer's pad id)
PROMPT_KEYS: dict[str, float | None] = {"prompt_ids": None, "prompt_mask": 0}
COMPLETION_KEYS: dict[str, float | None] = {
    "completion_ids": None,
    "completion_mask": 0,
    "tool_mask": 1,
    "old_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "importance_sampling_ratio": 0.0,
}
SPANNING_KEYS: dict[str, float] = {"token_type_ids": 0, "mm_token_type_ids": 0}  # prompt + completion columns
LIST_KEYS = ("num_images", "num_tiles")  # per-row Python lists
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_position_ids", "pixel_attention_mask", "spatial_shapes",
              "image_sizes")  # fmt: skip
RECOMPUTED_KEYS = ("num_items_in_batch",)
BEHAVIOUR_KEY = "old_per_token_logps"


class UnsupportedBatch(ValueError):
    """A batch SSB cannot cut into groups safely; it is then passed through unchanged."""


@dataclass(eq=False)
class BufferedGroup:
    """The rows of one prompt group, trimmed to its own widths.

    `prompt`: (G, P) tensors, left-padded; `completion`: (G, C) tensors, right-padded (a spanning key
    such as `token_type_ids` has its prompt part in `prompt` and its completion part in `completion`);
    `rows`: (G, ...) tensors, one entry per row (1-D `advantages`, sequence-level ratios); `lists`:
    per-row Python lists (`num_images`, and image tensors split by TRL's `split_pixel_values_by_grid`).
    """

    prompt: dict[str, torch.Tensor]
    completion: dict[str, torch.Tensor]
    rows: dict[str, torch.Tensor]
    lists: dict[str, list[Any]]
    weight: float  # mean |advantage|
    zero: bool  # every |advantage| <= eps
    replays: int = 0
    signature: tuple[Any, ...] = field(default=())

    @property
    def size(self) -> int:
        return int(self.prompt["prompt_ids"].size(0))

    @property
    def widths(self) -> tuple[int, int]:
        return int(self.prompt["prompt_ids"].size(1)), int(self.completion["completion_ids"].size(1))

    def stored(self) -> BufferedGroup:
        """A copy on the CPU that owns its memory (no view keeps the whole batch alive); per-row
        image tensors equal across the group's rows are kept once."""
        lists: dict[str, list[Any]] = {}
        for key, values in self.lists.items():
            if values and all(isinstance(v, torch.Tensor) for v in values):
                first = _own(values[0])
                lists[key] = [
                    first if v.shape == values[0].shape and torch.equal(v, values[0]) else _own(v)
                    for v in values
                ]
            else:
                lists[key] = list(values)
        return BufferedGroup(
            prompt={k: _own(v) for k, v in self.prompt.items()},
            completion={k: _own(v) for k, v in self.completion.items()},
            rows={k: _own(v) for k, v in self.rows.items()},
            lists=lists,
            weight=self.weight,
            zero=self.zero,
            replays=self.replays,
            signature=self.signature,
        )


@dataclass
class SSBStats:
    zero_groups: int = 0
    replaced: int = 0
    buffer_size: int = 0


class SelectiveSampleBuffer:
    """The buffer and the batch surgery, independent of any trainer.

    `apply(batch)` is the whole step on a scored GRPO batch dict: cut into groups, replace the
    zero-advantage ones by buffered groups, buffer the non-zero ones, re-pad. The trainer uses the
    parts (`split`, `select`, `add`, `assemble`) to fill in behaviour log-probs in between.
    """

    def __init__(
        self,
        capacity: int,
        num_generations: int,
        pad_token_id: int,
        *,
        seed: int | None = None,
        max_replays: int | None = None,
        advantage_eps: float = 1e-6,
        pad_to_multiple_of: int | None = None,
        sequence_level_ratio: bool = False,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"buffer_size must be at least 1, got {capacity}")
        if num_generations < 1:
            raise ValueError(f"num_generations must be at least 1, got {num_generations}")
        if max_replays is not None and max_replays < 1:
            raise ValueError(f"max_replays must be at least 1 (or None), got {max_replays}")
        self.capacity = capacity
        self.num_generations = num_generations
        self.pad_token_id = pad_token_id
        self.max_replays = max_replays
        self.advantage_eps = advantage_eps
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sequence_level_ratio = sequence_level_ratio  # importance_sampling_ratio is (B, 1)
        self.groups: list[BufferedGroup] = []  # oldest first
        self.generator = torch.Generator()
        self.generator.manual_seed(0 if seed is None else seed)

    def __len__(self) -> int:
        return len(self.groups)

    # ---------------------------------------------------------------------------------- the step
    def apply(self, batch: dict[str, Any]) -> tuple[dict[str, Any], SSBStats]:
        """Replace zero-advantage groups by buffered ones and buffer the informative ones. Returns
        the batch itself when nothing was replaced."""
        fresh = self.split(batch)
        replay = self.select(fresh)
        self.add([g for g in fresh if not g.zero])
        stats = SSBStats(sum(g.zero for g in fresh), len(replay), len(self))
        if not replay:
            return batch, stats
        device = batch["prompt_ids"].device
        return self.assemble([replay.get(i, g) for i, g in enumerate(fresh)], device), stats

    # --------------------------------------------------------------------------------- the parts
    def split(self, batch: dict[str, Any]) -> list[BufferedGroup]:
        """Cut a scored batch into its groups of `num_generations` rows (views, not copies).
        Raises `UnsupportedBatch` for a layout it cannot cut safely."""
        for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages"):
            if not isinstance(batch.get(key), torch.Tensor):
                raise UnsupportedBatch(f"the batch has no tensor {key!r}")
        n, width_p = batch["prompt_ids"].shape
        width_c = batch["completion_ids"].size(1)
        size = self.num_generations
        if n % size:
            raise UnsupportedBatch(f"{n} rows are not whole groups of {size}")
        try:
            split = split_pixel_values_by_grid(dict(batch))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise UnsupportedBatch(f"image tensors not assignable to rows: {exc}") from exc
        prompt, completion, spanning, rows, lists = {}, {}, {}, {}, {}
        for key, value in split.items():
            if value is None or key in RECOMPUTED_KEYS:
                continue
            if key in PROMPT_KEYS:
                prompt[key] = _check_2d(key, value, n, width_p)
            elif self._per_row(key, value):
                rows[key] = _check_rows(key, value, n)
            elif key in COMPLETION_KEYS or key == "advantages":
                completion[key] = _check_2d(key, value, n, width_c)
            elif key in SPANNING_KEYS:
                spanning[key] = _check_2d(key, value, n, width_p + width_c)
            elif key in LIST_KEYS or (key in IMAGE_KEYS and isinstance(value, list)):
                if not isinstance(value, list) or len(value) != n:
                    raise UnsupportedBatch(f"{key!r} is not one entry per row")
                lists[key] = value
            elif key in IMAGE_KEYS:
                # not split per row by TRL: usable only when already one entry per row (e.g. Idefics)
                rows[key] = _check_rows(key, value, n)
            else:
                raise UnsupportedBatch(f"unknown key {key!r}")
        groups = []
        for start in range(0, n, size):
            end = start + size
            mask_p = prompt["prompt_mask"][start:end]
            mask_c = completion["completion_mask"][start:end]
            used_p = mask_p.any(dim=0).nonzero()
            first = min(int(used_p[0]) if len(used_p) else width_p, width_p - 1) if width_p else 0
            used_c = mask_c.any(dim=0).nonzero()
            last = max(int(used_c[-1]) + 1 if len(used_c) else 0, min(1, width_c))
            group = BufferedGroup(
                prompt={k: v[start:end, first:] for k, v in prompt.items()},
                completion={k: v[start:end, :last] for k, v in completion.items()},
                rows={k: v[start:end] for k, v in rows.items()},
                lists={k: list(v[start:end]) for k, v in lists.items()},
                weight=0.0,
                zero=False,
            )
            for key, value in spanning.items():
                group.prompt[key] = value[start:end, first:width_p]
                group.completion[key] = value[start:end, width_p : width_p + last]
            advantages = (
                group.rows["advantages"] if "advantages" in group.rows else group.completion["advantages"]
            )
            magnitude = advantages.detach().abs().float()
            group.weight = float(magnitude.mean()) if magnitude.numel() else 0.0
            group.zero = bool((magnitude <= self.advantage_eps).all())
            group.signature = _signature(group)
            groups.append(group)
        return groups

    def select(self, fresh: Sequence[BufferedGroup]) -> dict[int, BufferedGroup]:
        """Buffered groups for the zero-advantage groups of `fresh`: index in `fresh` -> group.
        Drawn without replacement, with probability proportional to mean |advantage|."""
        zero = [i for i, g in enumerate(fresh) if g.zero]
        if not zero or not self.groups:
            return {}
        signature = fresh[0].signature
        eligible = [g for g in self.groups if g.signature == signature and g.weight > 0]
        count = min(len(zero), len(eligible))
        if not count:
            return {}
        weights = torch.tensor([g.weight for g in eligible], dtype=torch.float64)
        picked = torch.multinomial(weights, count, replacement=False, generator=self.generator).tolist()
        chosen = {}
        for slot, index in zip(zero, picked, strict=False):
            group = eligible[index]
            group.replays += 1
            chosen[slot] = group
        if self.max_replays is not None:
            self.groups = [g for g in self.groups if g.replays < self.max_replays]
        return chosen

    def add(self, groups: Sequence[BufferedGroup]) -> None:
        """Keep copies of the informative groups; the oldest leave past `capacity`."""
        self.groups.extend(g.stored() for g in groups if not g.zero and g.weight > 0)
        del self.groups[: max(0, len(self.groups) - self.capacity)]

    def assemble(self, groups: Sequence[BufferedGroup], device: torch.device | str) -> dict[str, Any]:
        """One batch from groups of possibly different widths: prompts left-padded, completions
        right-padded, image tensors joined as `_prepare_inputs` expects them."""
        first = groups[0]
        for group in groups[1:]:
            for part in ("prompt", "completion", "rows", "lists"):
                if getattr(group, part).keys() != getattr(first, part).keys():
                    raise ValueError(
                        f"groups with different {part} keys: {sorted(getattr(group, part))} "
                        f"vs {sorted(getattr(first, part))}"
                    )
        width_p = self._round(max(g.widths[0] for g in groups))
        width_c = self._round(max(g.widths[1] for g in groups))
        batch: dict[str, Any] = {}
        for key in first.prompt:
            value = self._pad_value(key, PROMPT_KEYS.get(key, SPANNING_KEYS.get(key)))
            batch[key] = torch.cat(
                [F.pad(g.prompt[key].to(device), (width_p - g.widths[0], 0), value=value) for g in groups]
            )
        for key in first.completion:
            value = self._pad_value(key, COMPLETION_KEYS.get(key, SPANNING_KEYS.get(key, 0)))
            padded = torch.cat(
                [F.pad(g.completion[key].to(device), (0, width_c - g.widths[1]), value=value) for g in groups]
            )
            batch[key] = torch.cat([batch[key], padded], dim=1) if key in SPANNING_KEYS else padded
        for key in first.rows:
            batch[key] = torch.cat([g.rows[key].to(device) for g in groups])
        for key in first.lists:
            values = [v for g in groups for v in g.lists[key]]
            batch[key] = [v.to(device) if isinstance(v, torch.Tensor) else v for v in values]
        batch = unsplit_pixel_values_by_grid(batch)
        loss_mask = (
            batch["completion_mask"] * batch["tool_mask"]
            if "tool_mask" in batch
            else batch["completion_mask"]
        )
        batch["num_items_in_batch"] = loss_mask.sum()
        return batch

    # ------------------------------------------------------------------------------------ helpers
    def _per_row(self, key: str, value: Any) -> bool:
        """1-D advantages, and vLLM's sequence-level importance ratios ((B, 1)), are one value a row."""
        if key == "advantages":
            return isinstance(value, torch.Tensor) and value.dim() == 1
        return key == "importance_sampling_ratio" and self.sequence_level_ratio

    def _round(self, width: int) -> int:
        multiple = self.pad_to_multiple_of
        return -(-width // multiple) * multiple if multiple else width

    def _pad_value(self, key: str, value: float | None) -> float:
        return self.pad_token_id if value is None else value


# ---------------------------------------------------------------------------------------- helpers
def _own(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy (never a view into the batch)."""
    copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
    copy.copy_(tensor.detach())
    return copy


def _check_2d(key: str, value: Any, rows: int, width: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or tuple(value.shape) != (rows, width):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UnsupportedBatch(f"{key!r} has shape {shape}, expected {(rows, width)}")
    return value


def _check_rows(key: str, value: Any, rows: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.size(0) != rows:
        raise UnsupportedBatch(f"{key!r} is not one entry per row")
    return value


def _signature(group: BufferedGroup) -> tuple[Any, ...]:
    """What must match for a buffered group to stand in a batch: keys, dtypes, trailing shapes.
    `old_per_token_logps` is left out: the trainer adds it to both sides before they meet."""

    def describe(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (str(value.dtype), tuple(value.shape[1:]))
        return type(value).__name__

    part = {
        "prompt": {k: describe(v)[0] for k, v in group.prompt.items()},
        "completion": {k: describe(v)[0] for k, v in group.completion.items() if k != BEHAVIOUR_KEY},
        "rows": {k: describe(v) for k, v in group.rows.items()},
        "lists": {k: describe(v[0]) if v else None for k, v in group.lists.items()},
    }
    return tuple((name, tuple(sorted(d.items()))) for name, d in part.items())
