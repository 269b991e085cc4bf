"""A transformers sequence-classification reward model as an RM scorer: (question, completion) →
raw score → level 0–5 through a `Calibration`.

Text-only: the sample's images are not fed to the model (their `<imageN>` placeholders stay in
the question text). Multimodal reward models are future work; until then an RM judges the
reasoning and the answer as text.

Reduction of the classification head's logits to one raw score (`reduction`):

| name | raw score | natural calibration |
| --- | --- | --- |
| `logit` | the last label's logit (the only one for a 1-label head: Skywork-Reward, …) | `linear:LO,HI`, `quantile` |
| `prob` | softmax probability of the last label ("good" in a bad/good head) | `linear:0,1` |
| `expected` | expected label index Σ i·p_i (heads trained on ordinal ratings 0…n-1) | `linear:0,n-1` |
| `auto` | `logit` for 1 label, `prob` for 2, `expected` for more | |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1v_data.config import model_path_identity
from r1v_data.errors import ConfigError
from r1v_data.grading.rewards import Calibration

__all__ = [
    "DEFAULT_CALIBRATION",
    "REDUCTIONS",
    "RM_SCORER",
    "RMScore",
    "RewardModelScorer",
    "completion_text",
    "rm_pair",
    "rm_version",
]

RM_SCORER = "rm"
RM_RULES_VERSION = 1  # bump when rendering, truncation or reductions change
REDUCTIONS = ("auto", "logit", "prob", "expected")
# A raw RM score has no scale known in advance; quantiles are the one calibration that works for
# any model without being told its range (levels are then relative to the scored set).
DEFAULT_CALIBRATION = "quantile"
# Of an over-long input, keep this share of tokens from the start (the question) and the rest
# from the end (the final reasoning and the answer, which an RM needs most).
_HEAD_SHARE = 0.25


@dataclass(frozen=True)
class RMScore:
    """One trace's raw reward and its level (None when the raw score is NaN)."""

    raw: float
    value: int | None

    @property
    def detail(self) -> str:
        return f"raw {self.raw:.6g}"


def rm_version(model: str, calibration: Calibration | str, reduction: str = "auto") -> str:
    """`rm/1:<model>:<reduction>:<calibration>`, computable without loading the model."""
    calib = calibration if isinstance(calibration, Calibration) else Calibration.parse(calibration)
    return f"rm/{RM_RULES_VERSION}:{model_path_identity(model)}:{reduction}:{calib.spec}"


def completion_text(trace: Mapping[str, Any]) -> str:
    """The completion as the model wrote it, with the `<think>` the prompt opened put back."""
    text = trace.get("text") or ""
    lowered = text.lower()
    if "</think>" in lowered and "<think>" not in lowered:
        return "<think>\n" + text  # the chat template or assistant prefix opened the block
    return text


def rm_pair(sample: Mapping[str, Any], trace: Mapping[str, Any]) -> tuple[str, str]:
    """The (question, completion) an RM scores: the sample's question as prompted (options
    rendered in, images only as their placeholders) and the trace's completion."""
    return str(sample.get("question") or ""), completion_text(trace)


class RewardModelScorer:
    """Scores (question, completion) pairs with `AutoModelForSequenceClassification`.

    The pair is rendered through the tokenizer's chat template when it has one (user = question,
    assistant = completion), else encoded as a text pair. Inputs longer than `max_length` tokens
    keep their first quarter and their last three quarters (question and answer survive).
    Batches are padded on the right with the config's pad token, so a causal-LM head pools the
    same last token batched or alone; without a pad token the EOS token pads.

    The model loads on first use; `version` needs no loading.

    Args:
        model: a local directory or a hub id.
        calibration: a `Calibration` or its spec; default `quantile`.
        reduction: see the module docstring.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ….
        dtype: "auto" (bfloat16 on a GPU that has it, else float16 on GPU, float32 on CPU),
            "float32", "bfloat16" or "float16".
        max_length: token limit of one rendered pair.
        batch_size: pairs per forward pass (sorted by length so padding stays small).
    """

    def __init__(
        self,
        model: str,
        *,
        calibration: Calibration | str = DEFAULT_CALIBRATION,
        reduction: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 4096,
        batch_size: int = 8,
    ):
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reward model reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")
        if max_length < 8 or batch_size < 1:
            raise ConfigError("reward model: max_length must be at least 8 and batch_size at least 1")
        try:
            self.calibration = (
                calibration if isinstance(calibration, Calibration) else Calibration.parse(calibration)
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.model_name = model
        self.reduction = reduction
        self.device_name = device
        self.dtype_name = dtype
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._chat = False
        self._pad_id = 0

    @property
    def version(self) -> str:
        return rm_version(self.model_name, self.calibration, self.reduction)

    # ---- loading ---------------------------------------------------------------------------
    def load(self) -> RewardModelScorer:
        """Load tokenizer and model now (scoring does it on first use)."""
        if self._model is not None:
            return self
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = _device(self.device_name, torch)
        dtype = _dtype(self.dtype_name, device, torch)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                self.model_name, dtype=dtype, output_loading_info=True
            )
        except (OSError, ValueError, KeyError) as exc:  # missing files, unknown architecture
            raise ConfigError(
                f"cannot load reward model {self.model_name!r}: {(str(exc).splitlines() or [repr(exc)])[0]}"
            ) from exc
        _check_head(self.model_name, info)
        if self.reduction in ("prob", "expected") and model.config.num_labels < 2:
            raise ConfigError(
                f"reward model reduction {self.reduction!r} needs a head with 2 or more labels; "
                f"{self.model_name!r} has 1: use logit"
            )
        self._pad_id = _set_pad_token(model, tokenizer)
        self._model, self._tokenizer = model.to(device).eval(), tokenizer
        self._chat = bool(getattr(tokenizer, "chat_template", None))
        return self

    @property
    def num_labels(self) -> int:
        return int(self.load()._model.config.num_labels)

    # ---- scoring ---------------------------------------------------------------------------
    def raw_scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One raw score per (question, completion) pair, in order."""
        import torch

        self.load()
        encoded = [self._encode(q, c) for q, c in pairs]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
        out = [math.nan] * len(encoded)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                logits = self._forward([encoded[i] for i in chunk])
                for i, value in zip(chunk, _reduce(logits, self.reduction).tolist(), strict=True):
                    out[i] = float(value)
        return out

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[RMScore]:
        """Raw scores and levels of a whole set (a quantile calibration is fitted on this set)."""
        raws = self.raw_scores(pairs)
        return [RMScore(raw, level) for raw, level in zip(raws, self.calibration.levels(raws), strict=True)]

    def _encode(self, question: str, completion: str) -> dict[str, list[int]]:
        tok = self._tokenizer
        if self._chat:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": completion}]
            rendered = tok.apply_chat_template(messages, tokenize=False)
            enc = tok(rendered, add_special_tokens=False)  # the template wrote BOS already
        else:
            enc = tok(question, completion)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return {k: _cut_middle(list(enc[k]), self.max_length) for k in keys}

    def _forward(self, batch: list[dict[str, list[int]]]) -> Any:
        import torch

        width = max(len(row["input_ids"]) for row in batch)
        pad = {"input_ids": self._pad_id, "attention_mask": 0, "token_type_ids": 0}
        tensors = {
            key: torch.tensor([row[key] + [pad[key]] * (width - len(row[key])) for row in batch])
            for key in batch[0]
        }
        device = next(self._model.parameters()).device
        logits = self._model(**{k: v.to(device) for k, v in tensors.items()}).logits
        return logits.float()


def _cut_middle(ids: list[int], limit: int) -> list[int]:
    if len(ids) <= limit:
        return ids
    head = int(limit * _HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (limit - head) :]


def _reduce(logits: Any, reduction: str) -> Any:
    import torch

    n = logits.shape[-1]
    if reduction == "auto":
        reduction = "logit" if n == 1 else "prob" if n == 2 else "expected"
    if reduction == "logit":
        return logits[:, -1]
    probs = torch.softmax(logits, dim=-1)
    if reduction == "prob":
        return probs[:, -1]
    return probs @ torch.arange(n, dtype=probs.dtype, device=probs.device)


def _device(name: str, torch: Any) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"reward model device {name!r}: {exc}") from None


def _dtype(name: str, device: Any, torch: Any) -> Any:
    if name == "auto":
        if device.type != "cuda":
            return torch.float32  # half precision on CPU is slow and inexact
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"reward model dtype {name!r}: use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def _check_head(model: str, info: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose classification head transformers had to initialise at random
    (a plain causal LM, say): its scores would be noise."""
    missing = [k for k in info.get("missing_keys") or () if k.split(".")[0] in ("score", "classifier")]
    if missing:
        raise ConfigError(
            f"{model!r} has no trained classification head ({', '.join(sorted(missing))} missing): "
            "name a sequence-classification reward model"
        )


def _set_pad_token(model: Any, tokenizer: Any) -> int:
    """The id to pad with. It must be the config's: a causal-LM head pools at the last token that
    is not the config's pad token, and refuses batches when the config has none."""
    config = model.config.get_text_config()
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError("the reward model's tokenizer has neither a pad nor an EOS token")
        config.pad_token_id = model.config.pad_token_id = pad
    return int(config.pad_token_id)
