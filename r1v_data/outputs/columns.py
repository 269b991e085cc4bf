"""The `sft` and `rl` rows of `outputs/kinds.py`, built a record batch at a time with Arrow.

The per-row builders made a Python dict per row (~10k rows/s: 20M traces took most of an hour);
these build the same columns from the query's batch with Arrow compute and numpy offsets, so a
row costs no Python call. The rows are the per-row builders' own, value for value (the tests
compare them on the test stores), and `BATCH_BUILDERS` returns each row's size as they do.
Preference pairs are few (one per sample) and keep the per-row builder.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r1v_data.grading.reward_model import completion_text
from r1v_data.outputs.kinds import KINDS, _user_text
from r1v_data.store import schema

_MARK = "\x00question\x00"  # stands for the question in the prompt's template


@lru_cache(maxsize=2)
def _template(has_options: bool) -> tuple[str, str]:
    """What the user turn puts before and after the question: the prompt code renders it, so the
    text stays the teacher's; only that it wraps the question unchanged is assumed (and checked)."""
    before, sep, after = _user_text(_MARK, has_options).partition(_MARK)
    if not sep or _MARK in after:
        raise AssertionError("the user turn no longer holds the question verbatim: build rows one at a time")
    return before, after


def user_texts(question: pa.Array, options: pa.Array) -> pa.Array:
    """`kinds._user_text` of every row: the question in the template for free-form or choices."""
    has = pc.fill_null(pc.greater(pc.list_value_length(options), 0), False)
    (b0, a0), (b1, a1) = _template(False), _template(True)
    before = pc.if_else(has, pa.scalar(b1), pa.scalar(b0))
    after = pc.if_else(has, pa.scalar(a1), pa.scalar(a0))
    return pc.binary_join_element_wise(before, question, after, "")


def completions(text: pa.Array) -> pa.Array:
    """`completion_text` of every trace: `<think>\\n` put back where the text closes a block it
    never opened. ASCII texts are checked with Arrow; the others (rare) by `completion_text`
    itself, as Python's `lower()` and Arrow's differ on a few non-ASCII letters."""
    text = pc.fill_null(text, "")
    lowered = pc.utf8_lower(text)
    opened = pc.and_(
        pc.match_substring(lowered, "</think>"), pc.invert(pc.match_substring(lowered, "<think>"))
    )
    out = pc.if_else(opened, pc.binary_join_element_wise("<think>\n", text, ""), text)
    other = np.flatnonzero(~pc.string_is_ascii(text).to_numpy(zero_copy_only=False))
    if not len(other):
        return out
    fixed = [completion_text({"text": text[int(i)].as_py()}) for i in other]
    mask = np.zeros(len(text), bool)
    mask[other] = True
    return pc.replace_with_mask(out, pa.array(mask), pa.array(fixed, pa.string()))


def _images(images: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The `images` column (bytes, no path), each row's image count and image bytes."""
    n = len(images)
    counts = pc.fill_null(pc.list_value_length(images), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(images)
    data = flat.field("bytes")
    sizes = pc.fill_null(pc.binary_length(data), 0).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(images).to_numpy(zero_copy_only=False)
    image_bytes = np.bincount(parents, weights=sizes, minlength=n).astype(np.int64)
    hf = pa.StructArray.from_arrays([data, pa.nulls(len(flat), pa.string())], ["bytes", "path"])
    return pa.ListArray.from_arrays(_offsets(counts), hf), counts, image_bytes


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


def _messages(n_images: np.ndarray, turns: list[pa.Array]) -> pa.Array:
    """Per row, a user turn (one image part per image, then the text `turns[0]`) and one turn
    for each further text in `turns` (the assistant's), as the schema's list of messages."""
    rows, per = len(n_images), len(turns)
    parts = np.ones((rows, per), np.int64)
    parts[:, 0] += n_images
    ends = np.cumsum(parts.ravel())  # one past each message's last part: its text part
    source = np.full(int(ends[-1]) if rows else 0, -1, np.int64)
    source[ends - 1] = np.arange(rows * per).reshape(per, rows).T.ravel()  # text k of row i: k*rows + i
    texts = pa.concat_arrays([t.cast(pa.string()) for t in turns]).take(pa.array(source, mask=source < 0))
    kinds = pa.array(["image", "text"]).take(pa.array((source >= 0).astype(np.int8)))
    content = pa.ListArray.from_arrays(
        _offsets(parts.ravel()), pa.StructArray.from_arrays([kinds, texts], ["type", "text"])
    )
    roles = pa.array(["user", "assistant"]).take(pa.array(np.tile(np.minimum(np.arange(per), 1), rows)))
    messages = pa.StructArray.from_arrays([roles, content], ["role", "content"])
    return pa.ListArray.from_arrays(_offsets(np.full(rows, per)), messages)


def _lengths(text: pa.Array) -> np.ndarray:
    return pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)


def _sft(batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray]:
    user = user_texts(batch.column("question"), batch.column("options"))
    answer = completions(batch.column("text"))
    images, n_images, image_bytes = _images(batch.column("images"))
    columns = {"id": batch.column("request_id"), "request_id": batch.column("request_id"),
               "messages": _messages(n_images, [user, answer]), "images": images, **_meta(batch)}  # fmt: skip
    return _table(columns, "sft"), image_bytes + _lengths(user) + _lengths(answer)


def _rl(batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray]:
    user = user_texts(batch.column("question"), batch.column("options"))
    images, n_images, image_bytes = _images(batch.column("images"))
    options = batch.column("options")
    options = pc.if_else(pc.is_null(options), pa.scalar([], options.type), options)
    columns = {"id": batch.column("sample_id"), "prompt": _messages(n_images, [user]), "images": images,
               "solution": batch.column("answer"), "answer_type": batch.column("answer_type"),
               "options": options, **_meta(batch)}  # fmt: skip
    return _table(columns, "rl"), image_bytes + _lengths(user)


def _meta(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    return {k: batch.column(k) for k in ("sample_id", "source", "subject", "difficulty")}


def _table(columns: dict[str, pa.Array], kind: str) -> pa.Table:
    """The columns in the output schema's order, cast to its types (checked again when written)."""
    arrow = schema.load(KINDS[kind]).arrow
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in arrow], schema=arrow)


BATCH_BUILDERS = {"sft": _sft, "rl": _rl}
