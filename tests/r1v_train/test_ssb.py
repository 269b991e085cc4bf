"""R1V2's Selective Sample Buffer: the buffer on synthetic GRPO batches (replacement, padding,
|advantage|-weighted seeded draws, bounded capacity), then `SelectiveSampleBufferGRPOTrainer` on the
rl shards `r1v-data mix` writes, with a tiny random InternVL on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import mathv_with_outputs, run_cli
from tiny_models import build_tiny_vlm
from trl.trainer.utils import shuffle_sequence_dict, split_pixel_values_by_grid, split_tensor_dict

from r1v_train.ssb import SelectiveSampleBuffer, UnsupportedBatch
from r1v_train.ssb_trainer import SelectiveSampleBufferGRPOTrainer

PAD = 0
G = 2  # completions per prompt


# ------------------------------------------------------------------------------ synthetic batches
def _pad(
    rows: list[list[Any]], side: str, value: float = PAD, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [
        [value] * (width - len(r)) + r if side == "left" else r + [value] * (width - len(r)) for r in rows
    ]
    return torch.tensor(padded, dtype=dtype)


def batch(groups: list[dict[str, Any]], *, images: bool = True, logps: bool = False,
          token_types: bool = False) -> dict[str, Any]:  # fmt: skip
    """A scored batch as TRL's `_generate_and_score_completions` returns it: each group is one
    prompt (token list) with G completions and their advantages; every row of a group carries the
    group's image (a 3x4x4 tensor filled with `tag`)."""
    prompts = [g["prompt"] for g in groups for _ in range(G)]
    completions = [c for g in groups for c in g["completions"]]
    out: dict[str, Any] = {
        "prompt_ids": _pad(prompts, "left"),
        "prompt_mask": _pad([[1] * len(p) for p in prompts], "left", 0),
        "completion_ids": _pad(completions, "right"),
        "completion_mask": _pad([[1] * len(c) for c in completions], "right", 0),
        "advantages": torch.tensor([a for g in groups for a in g["advantages"]]),
    }
    out["num_items_in_batch"] = out["completion_mask"].sum()
    if logps:  # the behaviour policy's log-probs: -(position + 1) / 10
        out["old_per_token_logps"] = _pad(
            [[-(i + 1) / 10 for i in range(len(c))] for c in completions], "right", 0.0, torch.float32
        )
    if token_types:  # 1 on the prompt's first token, 2 on the completion's first
        prompt_types = _pad([[1] + [0] * (len(p) - 1) for p in prompts], "left", 0)
        completion_types = _pad([[2] + [0] * (len(c) - 1) for c in completions], "right", 0)
        out["token_type_ids"] = torch.cat([prompt_types, completion_types], dim=1)
    if images:
        out["pixel_values"] = torch.stack(
            [torch.full((3, 4, 4), float(g["tag"])) for g in groups for _ in range(G)]
        )
        out["num_images"] = [1] * len(prompts)
    return out


def group(tag: int, prompt_len: int, completion_lens: tuple[int, int], advantage: float) -> dict[str, Any]:
    return {
        "tag": tag,
        "prompt": [100 * tag + i + 1 for i in range(prompt_len)],
        "completions": [
            [100 * tag + 50 + 10 * k + i + 1 for i in range(n)] for k, n in enumerate(completion_lens)
        ],
        "advantages": [advantage, -advantage],
    }


def row(b: dict[str, Any], key: str, i: int) -> list[Any]:
    return b[key][i].tolist()


def test_zero_advantage_groups_are_replaced_by_buffered_groups_repadded() -> None:
    ssb = SelectiveSampleBuffer(capacity=8, num_generations=G, pad_token_id=PAD, seed=0)
    a, b = group(1, 5, (1, 2), 1.0), group(2, 3, (2, 2), 0.0)
    first = batch([a, b])
    out, stats = ssb.apply(first)
    assert out is first  # nothing to replace with yet: the batch is TRL's own
    assert (stats.zero_groups, stats.replaced, stats.buffer_size) == (1, 0, 1)
    kept = ssb.groups[0].lists["pixel_values"]
    assert kept[0] is kept[1]  # the group's rows share one image: stored once
    for value in first.values():  # the buffer holds copies, not views of this batch
        if isinstance(value, torch.Tensor) and value.dim():
            value.zero_()

    c, d = group(3, 2, (6, 4), 0.5), group(4, 3, (1, 1), 0.0)
    second = batch([c, d])
    out, stats = ssb.apply(second)
    assert (stats.zero_groups, stats.replaced, stats.buffer_size) == (1, 1, 2)
    # rows 0-1: group c as it came; rows 2-3: group a in d's place, prompts left-padded to a's 5
    # tokens, completions right-padded to c's 6
    assert out["prompt_ids"].shape == (4, 5) and out["completion_ids"].shape == (4, 6)
    assert row(out, "prompt_ids", 0) == [0, 0, 0, 301, 302] and row(out, "prompt_mask", 1) == [0, 0, 0, 1, 1]
    assert row(out, "prompt_ids", 2) == row(out, "prompt_ids", 3) == [101, 102, 103, 104, 105]
    assert row(out, "prompt_mask", 2) == [1] * 5
    assert row(out, "completion_ids", 0) == [351, 352, 353, 354, 355, 356]
    assert row(out, "completion_ids", 2) == [151, 0, 0, 0, 0, 0] and row(out, "completion_mask", 2) == [
        1,
        0,
        0,
        0,
        0,
        0,
    ]
    assert row(out, "completion_ids", 3) == [161, 162, 0, 0, 0, 0] and row(out, "completion_mask", 3) == [
        1,
        1,
        0,
        0,
        0,
        0,
    ]
    assert row(out, "advantages", 0) == 0.5 and out["advantages"][2:].tolist() == [1.0, -1.0]
    # the image travels with its group; the token count the dapo-style losses divide by is recomputed
    assert [int(p.mean()) for p in out["pixel_values"]] == [3, 3, 1, 1] and out["num_images"] == [1] * 4
    assert int(out["num_items_in_batch"]) == 6 + 4 + 1 + 2
    # `_prepare_inputs` shuffles and splits it into micro-batches as it would TRL's own batch
    split: Any = split_pixel_values_by_grid(out)
    shuffled: Any = shuffle_sequence_dict(split)
    parts: Any = split_tensor_dict(shuffled, 2)
    assert all(len(part["pixel_values"]) == 2 for part in parts)


def test_logps_and_token_types_are_padded_on_their_side() -> None:
    ssb = SelectiveSampleBuffer(capacity=4, num_generations=G, pad_token_id=PAD, seed=0)
    ssb.apply(batch([group(1, 4, (3, 1), 2.0)], logps=True, token_types=True, images=False))
    out, stats = ssb.apply(
        batch(
            [group(2, 2, (1, 1), 0.0), group(3, 6, (2, 2), 0.0)], logps=True, token_types=True, images=False
        )
    )
    assert stats.replaced == 1 and out["prompt_ids"].shape == (4, 6) and out["completion_ids"].shape == (4, 3)
    # the first zero group's slot holds the buffered group, with its behaviour log-probs
    assert row(out, "old_per_token_logps", 0) == pytest.approx([-0.1, -0.2, -0.3])
    assert row(out, "old_per_token_logps", 1) == pytest.approx([-0.1, 0.0, 0.0])
    assert row(out, "old_per_token_logps", 2) == pytest.approx([-0.1, -0.2, 0.0])  # a fresh row, re-padded
    # token types span prompt + completion: split at the prompt width, each side padded its own way
    assert row(out, "token_type_ids", 0) == [0, 0, 1, 0, 0, 0, 2, 0, 0]
    assert row(out, "token_type_ids", 3) == [1, 0, 0, 0, 0, 0, 2, 0, 0]
    assert "pixel_values" not in out and "num_images" not in out


def test_draws_are_weighted_by_abs_advantage_and_seeded() -> None:
    def draws(seed: int, n: int) -> list[int]:
        ssb = SelectiveSampleBuffer(capacity=8, num_generations=G, pad_token_id=PAD, seed=seed)
        ssb.apply(batch([group(1, 3, (2, 2), 1.0), group(9, 3, (2, 2), -9.0)]))
        zero = ssb.split(batch([group(5, 3, (2, 2), 0.0)]))
        return [int(ssb.select(zero)[0].prompt["prompt_ids"][0, -1]) // 100 for _ in range(n)]

    picks = draws(0, 2000)
    assert 0.86 < picks.count(9) / len(picks) < 0.94  # P = 9 / (1 + 9)
    assert draws(0, 50) == picks[:50] and draws(1, 50) != picks[:50]
    # several zero groups in one batch get distinct buffered groups
    ssb = SelectiveSampleBuffer(capacity=8, num_generations=G, pad_token_id=PAD, seed=0)
    ssb.apply(batch([group(1, 3, (2, 2), 1.0), group(9, 3, (2, 2), 9.0)]))
    out, stats = ssb.apply(
        batch([group(5, 3, (2, 2), 0.0), group(6, 3, (2, 2), 0.0), group(7, 3, (2, 2), 0.0)])
    )
    assert stats.replaced == 2 and sorted(out["advantages"].abs().tolist()) == [0, 0, 1, 1, 9, 9]


def test_capacity_is_bounded_and_max_replays_retire_groups() -> None:
    ssb = SelectiveSampleBuffer(capacity=3, num_generations=G, pad_token_id=PAD, seed=0)
    for tag in range(1, 6):
        ssb.apply(batch([group(tag, 2, (1, 1), float(tag)), group(9, 2, (1, 1), 0.0)]))
        assert len(ssb) == min(tag, 3)
    assert [g.weight for g in ssb.groups] == [3.0, 4.0, 5.0]  # the oldest left first

    ssb = SelectiveSampleBuffer(capacity=3, num_generations=G, pad_token_id=PAD, seed=0, max_replays=2)
    ssb.apply(batch([group(1, 2, (1, 1), 1.0)]))
    zero = ssb.split(batch([group(2, 2, (1, 1), 0.0)]))
    assert ssb.select(zero) and len(ssb) == 1
    assert ssb.select(zero) and len(ssb) == 0
    assert ssb.select(zero) == {}
    with pytest.raises(ValueError, match="buffer_size"):
        SelectiveSampleBuffer(capacity=0, num_generations=G, pad_token_id=PAD)


def test_unknown_layouts_are_refused_and_layouts_do_not_mix() -> None:
    ssb = SelectiveSampleBuffer(capacity=4, num_generations=G, pad_token_id=PAD, seed=0)
    with pytest.raises(UnsupportedBatch, match="mystery"):
        ssb.split({**batch([group(1, 2, (1, 1), 1.0)]), "mystery": torch.zeros(2, 3)})
    with pytest.raises(UnsupportedBatch, match="whole groups"):
        two = batch([group(1, 2, (1, 1), 1.0), group(2, 2, (1, 1), 1.0)], images=False)
        ssb.split({k: v[:3] if v.dim() else v for k, v in two.items()})  # a group cut between processes
    ssb.apply(batch([group(1, 2, (1, 1), 1.0)]))  # an image group
    text_only = batch([group(2, 2, (1, 1), 0.0)], images=False)
    out, stats = ssb.apply(text_only)
    assert out is text_only and stats.replaced == 0  # not eligible: it would bring pixel values along


# ------------------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Any:
    import datasets

    root = tmp_path_factory.mktemp("ssb")
    store = mathv_with_outputs(root / "store", shared, "--min-score", "3")
    result = json.loads(
        run_cli("mix", "--store", store, "--out", root / "out", "--kind", "rl", "--json").stdout
    )
    assert result["rows"]["rl"] >= 8
    files = sorted(str(p) for p in (root / "out" / "rl" / "data").glob("train-*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train").select(range(8))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


def first_prompt_only() -> Any:
    """A reward that tells the completions of the first prompt it sees apart (0, 1, 0, ...) and
    is 0.0 for every other prompt: all later groups have zero advantage."""
    seen: list[str] = []

    def first_prompt_varied(completions: list[Any], id: list[str], **kwargs: Any) -> list[float]:
        seen.extend(i for i in id[:1] if not seen)
        return [float(k % 2) if i == seen[0] else 0.0 for k, i in enumerate(id)]

    return first_prompt_varied


def _train(cls: type, vlm: Path, rows: Any, out: Path, steps: int, **kw: Any) -> Any:
    from transformers import AutoProcessor
    from trl import GRPOConfig

    trainer_kw = {k: kw.pop(k) for k in ("buffer_size", "seed", "replay_logps") if k in kw}
    args = GRPOConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=2, num_generations=G,
        max_completion_length=8, use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
        report_to=[], **kw,
    )  # fmt: skip
    trainer = cls(model=str(vlm), reward_funcs=[first_prompt_only()], args=args, train_dataset=rows,
                  processing_class=AutoProcessor.from_pretrained(vlm), **trainer_kw)  # fmt: skip
    trainer.train()
    return trainer


class Recording(SelectiveSampleBufferGRPOTrainer):
    """Keeps what reaches the loss: each row's advantage, old log-probs and prompt length, the
    prompt width and the image count."""

    seen: list[dict[str, Any]]

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        old = inputs.get("old_per_token_logps")
        lengths = inputs["prompt_mask"].sum(dim=1).tolist()
        self.__dict__.setdefault("seen", []).append({
            "rows": {a: None if old is None else old[i].clone() for i, a in enumerate(inputs["advantages"].tolist())},
            "lengths": dict(zip(inputs["advantages"].tolist(), lengths, strict=True)),
            "width": inputs["prompt_ids"].size(1),
            "pixels": inputs["pixel_values"].shape[0],
        })  # fmt: skip
        return super()._compute_loss(model, inputs)


def test_grpo_with_the_buffer_keeps_a_gradient_on_zero_advantage_steps(
    rl_rows: Any, vlm: Path, tmp_path: Path
) -> None:
    from trl import GRPOTrainer

    trainer = _train(Recording, vlm, rl_rows, tmp_path / "ssb", 3, buffer_size=4, seed=0, learning_rate=1e-5)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(logs) == 3
    assert [h["ssb/zero_groups"] for h in logs] == [0, 1, 1] and [h["ssb/replaced"] for h in logs] == [
        0,
        1,
        1,
    ]
    assert [h["ssb/buffer_size"] for h in logs] == [1, 1, 1]
    assert all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in logs)
    # step 1 is TRL's own batch (no old log-probs: ratio 1); steps 2 and 3 replay its group, with
    # its advantages, its image and the log-probs of the policy that sampled it: the same at both
    # steps although the model moved in between
    first, *replays = trainer.seen
    assert set(first["rows"].values()) == {None} and len(first["rows"]) == 2 and 0 not in first["rows"]
    assert all(r["rows"].keys() == first["rows"].keys() for r in replays)
    assert all(torch.equal(replays[0]["rows"][a], replays[1]["rows"][a]) for a in first["rows"])
    assert all(r["pixels"] == 2 for r in trainer.seen)
    # without the buffer the zero-advantage step has no gradient at all
    plain = _train(GRPOTrainer, vlm, rl_rows, tmp_path / "plain", 2, learning_rate=1e-5)
    plain_logs = [h for h in plain.state.log_history if "loss" in h]
    assert [h["frac_reward_zero_std"] for h in plain_logs] == [0, 1]
    assert plain_logs[0]["grad_norm"] > 0 and plain_logs[1]["grad_norm"] == 0


def test_grpo_with_the_buffer_mixes_fresh_and_replayed_groups(
    rl_rows: Any, vlm: Path, tmp_path: Path
) -> None:
    """Two groups per generation over two optimiser steps (TRL then computes old_per_token_logps
    itself): the second generation's zero groups take the buffered one, padded to a batch with a
    fresh group. With replay_logps="current" the replayed rows' ratio starts at 1: nothing is
    clipped on the first step after generation, although the model moved since the sampling."""
    trainer = _train(Recording, vlm, rl_rows, tmp_path / "mixed", 4, steps_per_generation=2, buffer_size=4,
                     seed=0, replay_logps="current", learning_rate=1e-3)  # fmt: skip
    logs = [h for h in trainer.state.log_history if "ssb/replaced" in h]
    assert [h["ssb/zero_groups"] for h in logs] == [1, 2] and [h["ssb/replaced"] for h in logs] == [0, 1]
    losses = [h for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(h["loss"]) for h in losses)
    assert losses[2]["clip_ratio/region_mean"] == 0
    assert all(o is not None for r in trainer.seen for o in r["rows"].values())
    fresh = {a for r in trainer.seen[:2] for a in r["rows"] if a}
    assert len(fresh) == 2 and {a for r in trainer.seen[2:] for a in r["rows"] if a} == fresh
    # the replayed prompts keep their tokens, left-padded to the widest prompt of the new batch
    before = {a: n for r in trainer.seen[:2] for a, n in r["lengths"].items() if a}
    after = {a: n for r in trainer.seen[2:] for a, n in r["lengths"].items() if a}
    assert after == before
    widest = max(n for r in trainer.seen[2:] for n in r["lengths"].values())
    assert [r["width"] for r in trainer.seen[2:]] == [widest, widest]
