"""The streamed sample checks (`sample_drops`) against the plain in-memory rules on a real store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from r1v_data.curation import streamed_dedup
from r1v_data.curation.decontam import load_benchmark
from r1v_data.curation.sample_checks import (
    find_contamination,
    find_duplicates,
    load_candidates,
    sample_drops,
)
from r1v_data.store import Store, utcnow
from tests.conftest import mathv_with_outputs


def _image(data: bytes, tag: str) -> dict[str, object]:
    return {
        "bytes": data,
        "format": "PNG",
        "width": 1,
        "height": 1,
        "sha256": tag.ljust(64, "0"),
        "path": None,
    }


def _png(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")  # other bytes, same picture
    return buf.getvalue()


def _plant(store: Path, shared: Path) -> None:
    """Copies of MATH-Vision problems (exact, one word changed, another answer, another picture)
    and of MATH-500 problems: more than a bucket's 32 neighbours of one problem, so the LSH
    buckets overflow as they do at scale."""
    mv = shared / "mathv_testmini"
    rows = [json.loads(line) for line in (mv / "testmini.jsonl").read_text().splitlines()]
    long = [r for r in rows if len(r["question"].split()) > 40]
    math500 = [
        json.loads(x)["problem"]
        for x in (shared / "text_math" / "math500_test.jsonl").read_text().splitlines()
    ]
    long_math = next(p for p in math500 if len(p.split()) > 60)
    pictures = [((mv / r["image"]).read_bytes(), _png((mv / r["image"]).read_bytes())) for r in long[:3]]
    planted = []
    for k in range(15):
        src, (stored, reencoded) = long[k % 3], pictures[k % 3]
        words = src["question"].split()
        words[k % len(words)] = f"zebra{k % 4}"
        same = k % 5 == 0  # the stored image itself: exact copies when the words are left alone
        planted.append((src["question"] if same else " ".join(words), [_image(stored if same else reencoded, f"p{k}")],
                        src["answer"] if k % 7 else "another"))  # fmt: skip
    for k in range(45):  # one problem's copies fill a bucket past its 32 neighbours
        planted.append((long_math + ("" if k % 9 == 0 else f" Round to {k} places."), [], "1"))
    now = utcnow()
    with Store.open(store, write=True) as s:
        run = s.begin_run("plant")
        s.write_part("samples", [{"sample_id": f"{k:032x}", "source": "planted", "question": q, "options": [],
                                  "answer": a, "images": im, "run_id": run, "created_at": now}
                                 for k, (q, im, a) in enumerate(planted)], run, 0)  # fmt: skip
        s.finish_run(run, "ok", {}, {"command": "plant"})


def _reference(store: Store, writer, benchmarks, semantic):  # type: ignore[no-untyped-def]
    """filter.py's sample rules before they were streamed."""
    c = load_candidates(store, writer)
    drops = find_duplicates(c, semantic=semantic)
    gone = {d.sample_id for d in drops}
    drops += [d for d in find_contamination(c, benchmarks) if d.sample_id not in gone]
    return [(d.sample_id, d.stage, d.reason) for d in drops]


def test_streamed_sample_drops_equal_the_in_memory_rules(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = mathv_with_outputs(tmp_path / "store", shared)
    _plant(store_path, shared)
    benchmarks = [load_benchmark(str(shared / "text_math" / "math500_test.jsonl"))]
    monkeypatch.setattr(streamed_dedup, "_VERIFY", 7)  # many verification reads
    monkeypatch.setattr(streamed_dedup, "_FOLD", 50)  # and folds of the candidates
    semantic = None  # semantic dedup goes through the same path in test_filter's paraphrase test
    with Store.open(store_path, write=True) as store:
        run = store.begin_run("test")
        with store.writer(
            "scores", run, flush_rows=7
        ) as writer:  # hashes and caches the images, flushing as it goes
            # in two worker processes: the phashes and the text of each batch come back in order
            streamed = sample_drops(
                store, writer, benchmarks=benchmarks, semantic=semantic, batch=13, workers=2
            )
        with store.writer("scores", run) as writer:
            expected = _reference(store, writer, benchmarks, semantic)
            cached = sample_drops(store, writer, benchmarks=benchmarks, semantic=semantic, batch=64)
        store.finish_run(run, "ok", {}, {"command": "test"})
    reasons = [r.split(" (")[0].split(":")[0] for _, _, r in expected]
    assert len(expected) > 40
    assert any("(near:" in r for _, _, r in expected) and any("(exact:" in r for _, _, r in expected)
    assert "contamination" in reasons
    for got in (streamed, cached):
        assert list(zip(*got.to_pydict().values(), strict=True)) == expected
