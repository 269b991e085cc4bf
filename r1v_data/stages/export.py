"""Exports of `mix` output to other trainers' layouts.

`llamafactory`: LLaMA-Factory's sharegpt format. The SFT rows become `r1v_sft.jsonl` with
`messages` (role/content strings) and `images` (file paths relative to the export), the images
are written once each under `images/`, and `dataset_info.json` declares the dataset.

`easyr1` and `verl`: the RL rows as Parquet under `data/`, one file per `rl` shard (memory stays bounded),
images embedded as `datasets` Images, plus `r1v_reward.py`, a reward module with each trainer's
signature that calls r1v's own verifier (`r1v_data.grading.rl_rewards`):
- EasyR1 reads `problem`, `answer` and `images` (its default keys: `data.prompt_key=problem`);
- verl reads `prompt` (chat messages), `images`, `data_source`, `ability`,
  `reward_model.ground_truth` and `extra_info`.

In every layout a prompt holds exactly as many `<image>` tokens as its row has images: the
question's own `<imageN>` placeholders are removed and the tokens put first, in image order
(these trainers split the prompt on `<image>` and refuse, or misalign, rows where the two differ).

`run_export` writes any of them with `manifest.json` (the config and counts) and the replacement
rules of `mix --out`: a non-empty folder that is not an earlier export is never touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from r1v_data import __version__
from r1v_data.backends.prompts import parts_text
from r1v_data.config import ExportConfig
from r1v_data.outputs.folder import replacing, write_manifest
from r1v_data.outputs.shards import find_shards, hf_features_of

_PLACEHOLDER = re.compile(r"<image\d*>\s*")
DATASET_NAME = "r1v_sft"
_BATCH = 1024  # SFT rows read and written at a time (a few MB of text and images)


@dataclass
class ExportResult:
    format: str
    dest: str
    rows: int
    images: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_export(cfg: ExportConfig) -> ExportResult:
    """The export, written beside `cfg.dest` and swapped in whole (`outputs/folder.py`): an earlier
    export is replaced only with `overwrite`, and nothing else ever is."""
    kind = "sft" if cfg.format == "llamafactory" else "rl"
    find_shards(cfg.source, kind)  # before anything is written: a clear error when there are none
    with replacing(cfg.dest, "export", overwrite=cfg.overwrite, reads=[cfg.source]) as dest:
        if cfg.format == "llamafactory":
            result = export_llamafactory(cfg.source, dest)
        else:
            result = export_rl(cfg.source, dest, cfg.format)
        result.dest = str(cfg.dest)
        write_manifest(dest, {
            "command": "export", "r1v_version": __version__, "config": cfg.model_dump(mode="json"),
            "counts": result.as_dict(),
        })  # fmt: skip
    return result


def export_llamafactory(mix_out: Path, dest: Path) -> ExportResult:
    shards = find_shards(mix_out, "sft")
    (dest / "images").mkdir(parents=True, exist_ok=True)
    rows, images = 0, _ImageFiles(dest)
    with (dest / f"{DATASET_NAME}.jsonl").open("w") as f:
        for batch in _batches(shards):
            lines = [_sharegpt_line(row, images) for row in batch.to_pylist()]
            f.write("".join(lines))  # a write per batch, not per row
            rows += len(lines)
    info = {DATASET_NAME: {
        "file_name": f"{DATASET_NAME}.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
    }}  # fmt: skip
    (dest / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return ExportResult("llamafactory", str(dest), rows, images.written)


def _batches(shards: list[Path]) -> Iterator[pa.RecordBatch]:
    """The rows a batch at a time, shard after shard, a row group in memory: a dataset scan reads
    ahead (row groups of several shards: 380 MB more at 300k rows of the bench's mix)."""
    for shard in shards:
        yield from pq.ParquetFile(shard).iter_batches(batch_size=_BATCH)


def _sharegpt_line(row: dict[str, Any], images: _ImageFiles) -> str:
    paths = [images.save(im["bytes"]) for im in row["images"]]
    return json.dumps({"messages": _messages(row["messages"], len(paths)), "images": paths}) + "\n"


def _messages(messages: list[dict[str, Any]], n_images: int) -> list[dict[str, str]]:
    out = []
    for m in messages:
        text = parts_text(m["content"])
        if m["role"] == "user":  # all images go with the first user turn, their tokens first
            text = "<image>" * n_images + _PLACEHOLDER.sub("", text)
            n_images = 0
        out.append({"role": m["role"], "content": text})
    return out


def _rl_prompt(row: dict[str, Any]) -> str:
    (user,) = _messages(row["prompt"], len(row["images"]))
    return user["content"]


def _easyr1_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {"problem": _rl_prompt(row), "answer": row["solution"], "images": row["images"]}


def _verl_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "data_source": f"r1v/{row['source']}",
        "prompt": [{"role": "user", "content": _rl_prompt(row)}],
        "images": row["images"],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": row["solution"]},
        "extra_info": {"split": "train", "index": index, "sample_id": row["sample_id"],
                       "answer_type": row["answer_type"], "options": row["options"]},
    }  # fmt: skip


_IMAGES = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
_RL_LAYOUTS = {
    "easyr1": (_easyr1_row, [("problem", pa.string()), ("answer", pa.string()), ("images", _IMAGES)]),
    "verl": (_verl_row, [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", _IMAGES),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("sample_id", pa.string()),
                                  ("answer_type", pa.string()), ("options", pa.list_(pa.string()))])),
    ]),
}  # fmt: skip
_REWARD_MODULE = """\
# r1v's answer-accuracy reward (its own verifier, the rules that curated this data) in each
# trainer's reward signature; needs `pip install r1v` in the training environment.
#   verl:   custom_reward_function.path=r1v_reward.py custom_reward_function.name=compute_score
#   EasyR1: worker.reward.reward_function=r1v_reward.py:compute_score_batch (reward_type=batch)
from r1v_data.grading.rl_rewards import REWARD_VERSION  # noqa: F401
from r1v_data.grading.rl_rewards import easyr1_compute_score as compute_score_batch  # noqa: F401
from r1v_data.grading.rl_rewards import verl_compute_score as compute_score  # noqa: F401
"""


def export_rl(mix_out: Path, dest: Path, layout: str) -> ExportResult:
    """The RL rows in EasyR1's or verl's Parquet layout, one output file per input shard."""
    build, fields = _RL_LAYOUTS[layout]
    arrow = hf_features_of(pa.schema(fields)).arrow_schema
    shards = find_shards(mix_out, "rl")
    # the data apart from the reward module: EasyR1 takes a folder's file type from its first file
    (dest / "data").mkdir(parents=True, exist_ok=True)
    rows = images = 0
    for i, shard in enumerate(shards):
        path = dest / "data" / f"train-{i:05d}-of-{len(shards):05d}.parquet"
        with pq.ParquetWriter(path, arrow, compression="zstd") as writer:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=256):
                built = [build(row, rows + k) for k, row in enumerate(batch.to_pylist())]
                writer.write_table(pa.Table.from_pylist(built, schema=arrow))
                rows += len(built)
                images += sum(len(b["images"]) for b in built)
    (dest / "r1v_reward.py").write_text(_REWARD_MODULE)
    return ExportResult(layout, str(dest), rows, images)


class _ImageFiles:
    """Each distinct image written once under `images/`, named by its content hash. The folder
    itself records what is written, so memory does not grow with the number of images; a small
    cache of recent hashes spares the checks for the rows of one sample, which come together."""

    def __init__(self, dest: Path, recent: int = 4096):
        self.dest, self.recent, self.written = dest, recent, 0
        self._names: OrderedDict[str, str] = OrderedDict()

    def save(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        rel = self._names.get(digest)
        if rel is None:
            rel = self._names[digest] = self._write(digest, data)
            if len(self._names) > self.recent:
                self._names.popitem(last=False)
        return rel

    def _write(self, digest: str, data: bytes) -> str:
        with Image.open(io.BytesIO(data)) as im:
            ext = (im.format or "png").lower().replace("jpeg", "jpg")
        rel = f"images/{digest}.{ext}"
        if not (self.dest / rel).exists():
            (self.dest / rel).write_bytes(data)
            self.written += 1
        return rel
