"""Preflight: would these SFT rows break training with this model? Checked before a GPU is spent.

For every SFT row the target model's own chat template renders the conversation (image content
parts included); a row fails when the rendered text holds a different number of image
placeholders than the row has images, or when it is longer than `max_length` tokens (images
count as `image_tokens` each, the visual tokens a VLM inserts per image), or when the template
cannot render it at all. The tokenizer comes from a local folder or the Hub cache (offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from r1v_data.errors import ConfigError
from r1v_data.outputs.shards import find_shards


@dataclass
class PreflightResult:
    model: str
    rows: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # per problem
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first failures, with their ids
    max_tokens_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def preflight(
    mix_out: Path, model: str, *, max_length: int, image_token: str | None = None, image_tokens: int = 256
) -> PreflightResult:
    shards = find_shards(mix_out, "sft")
    tokenizer = _tokenizer(model)
    placeholder = image_token or getattr(tokenizer, "image_token", None) or "<image>"
    result = PreflightResult(model)
    for batch in ds.dataset([str(p) for p in shards], format="parquet").to_batches(
        batch_size=256, columns=["id", "messages", "images"]
    ):
        for row in batch.to_pylist():
            result.rows += 1
            problem = _check(tokenizer, row, placeholder, max_length, image_tokens, result)
            if problem:
                kind = problem.split(":", 1)[0]
                result.failed[kind] = result.failed.get(kind, 0) + 1
                if len(result.examples) < 20:
                    result.examples.append({"id": row["id"], "problem": problem})
    return result


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--model {model!r}: cannot load its tokenizer ({str(exc).splitlines()[0]})"
        ) from None
    if not tokenizer.chat_template:
        raise ConfigError(
            f"--model {model!r} has no chat template: preflight checks what the template renders"
        )
    return tokenizer


def _check(
    tokenizer: Any,
    row: dict[str, Any],
    placeholder: str,
    max_length: int,
    image_tokens: int,
    result: PreflightResult,
) -> str | None:
    messages = [
        {"role": m["role"], "content": [{"type": p["type"], **({"text": p["text"]} if p["type"] == "text" else {})}
                                        for p in m["content"]]}
        for m in row["messages"]
    ]  # fmt: skip
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as exc:  # a template error is the finding, whatever its type
        return f"template: {type(exc).__name__}: {str(exc)[:120]}"
    images, found = len(row["images"]), text.count(placeholder)
    if found != images:
        return f"image tokens: {found} {placeholder!r} in the rendered text, {images} images"
    length = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + images * (image_tokens - 1)
    result.max_tokens_seen = max(result.max_tokens_seen, length)
    if length > max_length:
        return f"too long: {length} tokens > {max_length}"
    return None
