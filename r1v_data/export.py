"""Exports of `mix` output to other trainers' layouts.

`llamafactory`: LLaMA-Factory's sharegpt format. The SFT rows become `r1v_sft.jsonl` with
`messages` (role/content strings) and `images` (file paths relative to the export), the images
are written once each under `images/`, and `dataset_info.json` declares the dataset. Every user
turn holds exactly as many `<image>` tokens as the row has images: the question's own `<imageN>`
placeholders are removed and the tokens put first, in image order (LLaMA-Factory refuses rows
where the two differ).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
from PIL import Image

from r1v_data.errors import ConfigError

_PLACEHOLDER = re.compile(r"<image\d*>\s*")
DATASET_NAME = "r1v_sft"


@dataclass
class ExportResult:
    format: str
    dest: str
    rows: int
    images: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_llamafactory(mix_out: Path, dest: Path) -> ExportResult:
    shards = sorted((Path(mix_out) / "sft" / "data").glob("train-*.parquet"))
    if not shards:
        raise ConfigError(f"{mix_out} has no SFT shards (sft/data/train-*.parquet): run `r1v-data mix` first")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows, written = 0, set[str]()
    with (dest / f"{DATASET_NAME}.jsonl").open("w") as f:
        for batch in ds.dataset([str(p) for p in shards], format="parquet").to_batches(batch_size=256):
            for row in batch.to_pylist():
                paths = [_save_image(dest, im["bytes"], written) for im in row["images"]]
                f.write(
                    json.dumps({"messages": _messages(row["messages"], len(paths)), "images": paths}) + "\n"
                )
                rows += 1
    info = {DATASET_NAME: {
        "file_name": f"{DATASET_NAME}.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
    }}  # fmt: skip
    (dest / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return ExportResult("llamafactory", str(dest), rows, len(written))


def _messages(messages: list[dict[str, Any]], n_images: int) -> list[dict[str, str]]:
    out = []
    for m in messages:
        text = "".join(p["text"] or "" for p in m["content"] if p["type"] == "text")
        if m["role"] == "user":
            text = "<image>" * n_images + _PLACEHOLDER.sub("", text)
            n_images = 0  # all images go with the first user turn
        out.append({"role": m["role"], "content": text})
    return out


def _save_image(dest: Path, data: bytes, written: set[str]) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as im:
        ext = (im.format or "png").lower().replace("jpeg", "jpg")
    rel = f"images/{digest}.{ext}"
    if digest not in written:
        (dest / rel).write_bytes(data)
        written.add(digest)
    return rel
