"""The batch builders of `outputs/columns.py` make the per-row builders' rows and sizes, value
for value, on the rows where they could differ: no images or several, null or empty options,
null text, think blocks opened or not, and non-ASCII letters that Python and Arrow lower apart."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from r1v_data.outputs.card import TraceStats
from r1v_data.outputs.columns import BATCH_BUILDERS
from r1v_data.outputs.kinds import BUILDERS

_IMAGE = pa.struct([("bytes", pa.binary()), ("format", pa.string()), ("path", pa.string())])
_TEXTS = [
    "plain \\boxed{1}", "step</think>\\boxed{2}", "<think>a</think>\\boxed{3}", "STEP</THINK> x", None, "",
    "Kelvin </thin\u212a> \u00e9", "<th\u0130nk> then </think>", "\u00fcber </think> 4", "\u4e2d </think> <think>",
]  # fmt: skip


def _batch() -> pa.RecordBatch:
    n = len(_TEXTS)
    images = [
        [{"bytes": b"x" * (i + 1) * k, "format": "PNG", "path": None} for k in range(i % 3)] for i in range(n)
    ]
    images[4] = None
    options = [None, [], ["3", "4"], ["a"], None, [], ["b", "c"], None, [], ["\u00e9"]]
    return pa.RecordBatch.from_pydict({
        "sample_id": [f"s{i // 2}" for i in range(n)], "question": [f"Q{i} <image1> \u00e9?" for i in range(n)],
        "options": pa.array(options, pa.list_(pa.string())), "answer": [str(i) for i in range(n)],
        "answer_type": ["free_form"] * n, "images": pa.array(images, pa.list_(_IMAGE)),
        "source": ["src"] * n, "subject": [None, "geometry"] * (n // 2), "difficulty": pa.array([1, None] * (n // 2), pa.int32()),
        "request_id": [f"r{i}" for i in range(n)], "text": _TEXTS,
        "teacher": ["t1", "t2", "t1", None, "t2", "t1", "t1", "t2", None, "t1"], "verifier": ["v"] * n,
        "completion_tokens": pa.array([10, None, 10, 20, None, 5, 5, 5, 7, 10], pa.int64()),
        "tokens": pa.array([10, 3, 10, 20, 0, 5, 5, 5, 7, 10], pa.int64()),
    })  # fmt: skip


def test_batch_builders_make_the_per_row_builders_rows_and_sizes() -> None:
    batch = _batch()
    for kind, build in BATCH_BUILDERS.items():
        table, sizes = build(batch)
        rows = [BUILDERS[kind](row) for row in batch.to_pylist()]
        assert table.to_pylist() == [built for built, _ in rows], kind
        assert sizes.tolist() == [size for _, size in rows], kind


def test_trace_stats_by_batch_count_as_by_row() -> None:
    by_row, by_batch = TraceStats(), TraceStats()
    batch = _batch()
    for row in batch.to_pylist():
        by_row.add(row)
    by_batch.add_batch(batch.slice(0, 4))
    by_batch.add_batch(batch.slice(4))
    assert list(by_batch.teachers.items()) == list(by_row.teachers.items())  # ties keep their order
    assert by_batch.tokens == by_row.tokens and by_batch.estimated == by_row.estimated == 2
    assert by_batch.teachers == Counter({("t1", "v"): 5, ("t2", "v"): 3, (None, "v"): 2})
