"""Benchmark decontamination against the real evaluation sets in ../shared/data: planted copies
(verbatim and lightly edited) are caught with evidence, clean problems pass."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from r1v_data.curation import decontam
from r1v_data.curation.decontam import Benchmark, check_all, load_benchmark, parse_spec
from r1v_data.curation.overlap import ImageIndex, words
from r1v_data.curation.phash import hamming
from r1v_data.errors import ConfigError, SourceError

FRESH = [
    "A baker fills 7 trays with 12 rolls each and sells all but 9 rolls. How many rolls does she sell?",
    "Let f(x) = 3x^2 - 5x + 2. Find the sum of the roots of f(x) = 0 and the value of f(4).",
    "How many triangles are in the picture?\n<image1>",
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def text_math(shared: Path) -> Path:
    return shared / "text_math"


@pytest.fixture(scope="module")
def math500(text_math: Path) -> Benchmark:
    return load_benchmark(str(text_math / "math500_test.jsonl"))


@pytest.fixture(scope="module")
def mathv(shared: Path) -> Benchmark:
    return load_benchmark(str(shared / "mathv_testmini" / "testmini.jsonl"))


def test_words_normalise_case_latex_and_layout() -> None:
    assert words(r"Find $\frac{1}{2}\cdot 1{,}000$ when \left( x \le 3.5 \right) \text{cm}") == [
        "find", "1", "2", "1000", "when", "x", "3.5", "cm",
    ]  # fmt: skip
    assert words("What  IS\n2,500 + \\pi?") == ["what", "is", "2500", "pi"]
    # options and image placeholders are layout, not the problem
    assert words("How many?\n<image1>\n\nChoices:\n(A) 3\n(B) 4") == ["how", "many"]
    assert words("[asy]draw((0,0)--(1,1));[/asy] Find AB.") == ["find", "ab"]
    assert words("求 x 的值") == ["求", "x", "的", "值"]


def test_verbatim_and_lightly_edited_math500_copies_are_caught(math500: Benchmark, text_math: Path) -> None:
    row = next(r for r in _rows(text_math / "math500_test.jsonl") if len(words(r["problem"])) >= 60)
    problem, uid = row["problem"], row["unique_id"]
    changed = problem.split(" ")
    plain = [i for i, token in enumerate(changed) if token.isalpha()]
    for k in (1, 3, 5):  # three words changed, a sixth of the way apart: 13-word runs remain
        changed[plain[len(plain) * k // 6]] = "banana"
    variants = {
        "verbatim": problem,
        "case and whitespace": "  " + problem.upper().replace(" ", " \n\t "),
        "sentence prepended": "Here is a nice exercise from my homework, please help. " + problem,
        "words changed": " ".join(changed),
    }
    assert len(set(variants.values())) == len(variants)
    for what, text in variants.items():
        hit = math500.check(text)
        assert hit is not None, what
        assert (hit.benchmark, hit.item, hit.kind) == ("math500_test", uid, "ngram"), what
        assert hit.reason.startswith(f"contamination: 13-gram overlap with math500_test:{uid} ("), what
        assert hit.evidence in " ".join(words(problem)), what
    assert math500.check(problem).count == math500.text.totals[math500.items.index(uid)]  # all shared


def test_short_benchmark_questions_match_on_whole_text(math500: Benchmark, text_math: Path) -> None:
    short = next(r for r in _rows(text_math / "math500_test.jsonl") if 3 <= len(words(r["problem"])) < 13)
    hit = math500.check(short["problem"].upper() + "  ")
    assert hit is not None and hit.kind == "text" and hit.item == short["unique_id"]
    assert hit.reason.startswith(f"contamination: same normalised text as math500_test:{short['unique_id']}")
    # documented limit: under 13 words there is no n-gram, so an added sentence is not caught
    assert math500.check("Please answer. " + short["problem"]) is None


def test_clean_problems_pass(math500: Benchmark, text_math: Path) -> None:
    aime = [load_benchmark(str(text_math / f)) for f in ("aime24_test.jsonl", "aime25_test.jsonl")]
    gsm8k = [r["question"] for r in _rows(text_math / "gsm8k_test.jsonl")]
    hits = check_all([math500, *aime], gsm8k + FRESH)
    assert len(hits) == 1319 + len(FRESH)
    assert [h.reason for h in hits if h] == []  # 0 false positives over the whole of GSM8K


def test_stock_phrasing_needs_min_fraction(text_math: Path) -> None:
    # AIME problems share "m and n are relatively prime positive integers. Find m+n" with a
    # MATH-500 problem: the plain 13-gram rule flags them, a 10% share of the item does not.
    aime = [r["problem"] for r in _rows(text_math / "aime24_test.jsonl")]
    plain = load_benchmark(str(text_math / "math500_test.jsonl"))
    flagged = [h for h in plain.check_batch(aime) if h]
    assert flagged and all("relatively prime" in h.evidence for h in flagged)
    strict = load_benchmark(str(text_math / "math500_test.jsonl"), min_fraction=0.1)
    assert not any(strict.check_batch(aime))
    copy = next(r["problem"] for r in _rows(text_math / "math500_test.jsonl") if len(r["problem"]) > 300)
    assert strict.check("Solve: " + copy) is not None


def _variant(data: bytes, how: str) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if how == "resized":
            im = im.resize((im.width // 2, im.height // 2))
        elif how == "blurred":
            im = im.filter(ImageFilter.GaussianBlur(1))
        buf = io.BytesIO()
        im.save(
            buf, "PNG" if how != "re-encoded" else "JPEG", **({"quality": 70} if how == "re-encoded" else {})
        )
        return buf.getvalue()


def test_mathvision_images_caught_by_phash(mathv: Benchmark, shared: Path) -> None:
    rows = _rows(shared / "mathv_testmini" / "testmini.jsonl")[:12]
    for row in rows:
        original = (shared / "mathv_testmini" / row["image"]).read_bytes()
        for how in ("re-encoded", "resized", "blurred"):
            hit = mathv.check(FRESH[2], [_variant(original, how)])
            assert hit is not None and hit.kind == "image", (row["id"], how)
            assert hit.item == row["id"] and int(hit.evidence) <= decontam.DEFAULT_MAX_DISTANCE
            assert hit.reason == f"contamination: image phash distance {hit.evidence} to testmini:{row['id']}"
    # stored image structs and precomputed hashes are accepted too
    data = (shared / "mathv_testmini" / rows[0]["image"]).read_bytes()
    assert mathv.check(FRESH[0], [{"bytes": data}]).evidence == "0"
    assert mathv.check(FRESH[0], [decontam.image_phash(data) ^ 0b11]).evidence == "2"


def test_different_images_and_clean_text_pass(mathv: Benchmark, shared: Path) -> None:
    others = sorted((shared / "mmmu_pro_tool_samples" / "images").glob("*.png"))[:10]
    assert others
    hits = mathv.check_batch([FRESH[2]] * len(others), [[p.read_bytes()] for p in others])
    assert hits == [None] * len(others)
    assert mathv.check(FRESH[2], []) is None


def test_mathvision_question_text_copy_caught(mathv: Benchmark, shared: Path) -> None:
    row = next(
        r for r in _rows(shared / "mathv_testmini" / "testmini.jsonl") if len(words(r["question"])) > 30
    )
    hit = mathv.check(row["question"].replace("<image1>", ""))
    assert hit is not None and hit.kind == "ngram" and hit.item == row["id"]


def test_folder_and_parquet_benchmarks(shared: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(shared / "mathv_testmini" / "testmini.jsonl")[:3]
    folder = tmp_path / "mini_bench"
    (folder / "images").mkdir(parents=True)
    for row in rows:  # a folder holding one JSONL and the images it names
        (folder / row["image"]).write_bytes((shared / "mathv_testmini" / row["image"]).read_bytes())
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(str(folder))
    assert (bench.name, len(bench.items), len(bench.image_items)) == ("mini_bench", 3, 3)
    image = (folder / rows[2]["image"]).read_bytes()
    assert bench.check(FRESH[0], [_variant(image, "resized")]).item == rows[2]["id"]

    table = pa.Table.from_pylist([{"problem": FRESH[1], "answer": "5/3", "id": "p1"}])
    pq.write_table(table, tmp_path / "bench.parquet")
    hit = load_benchmark(str(tmp_path / "bench.parquet")).check("Hint: " + FRESH[1])
    assert hit is not None and hit.reason.startswith("contamination: 13-gram overlap with bench:p1 ")


def test_a_benchmark_is_schema_checked_all_at_once_and_row_by_row_where_one_fails() -> None:
    from r1v_data.readers.samples import conforming

    good = {"sample_id": "0" * 32, "question": "What is 2+2?", "options": [], "answer": "4", "images": []}
    bad = {**good, "question": 5}  # what `prepare` would quarantine as an invalid record
    assert conforming([good, good]) == [True, True]
    assert conforming([good, bad, good]) == [True, False, True]


def test_pigeonhole_index_equals_brute_force() -> None:
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(300)]
    for k in (0, 3, 6, 10):
        index = ImageIndex(base, k)
        for _ in range(300):
            query = rng.choice(base)
            for bit in rng.sample(range(64), rng.randint(0, k + 2)):
                query ^= 1 << bit
            best = min((hamming(query, h), i) for i, h in enumerate(base))
            assert index.nearest(query) == (best if best[0] <= k else None), k


def test_batches_agree_with_single_checks(math500: Benchmark, text_math: Path, monkeypatch) -> None:
    rows = _rows(text_math / "math500_test.jsonl")[:40]
    gsm = [r["question"] for r in _rows(text_math / "gsm8k_test.jsonl")[:40]]
    questions = [q for pair in zip([r["problem"] for r in rows], gsm, strict=True) for q in pair]
    monkeypatch.setattr(decontam, "BATCH", 7)  # several chunks, split at odd places
    batch = math500.check_batch(questions)
    assert batch == [math500.check(q) for q in questions]
    assert [h is not None for h in batch] == [True, False] * 40


def test_spec_options(tmp_path: Path) -> None:
    src = tmp_path / "bench.jsonl"
    rows = [{"qid": f"q{i}", "prompt": f"Question number {i}: " + FRESH[1], "gold": "3"} for i in range(2)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert parse_spec(f"{src}#name=mine&question=prompt&source_id=qid").mapping == {
        "question": ["prompt"],
        "source_id": ["qid"],
    }
    bench = load_benchmark(f"{src}#name=mine&question=prompt&source_id=qid&answer=gold", ngram=8)
    hit = bench.check(rows[1]["prompt"])
    assert hit is not None and hit.reason.startswith("contamination: 8-gram overlap with mine:q0 (")
    assert bench.describe()["items"] == 2 and bench.describe()["ngram"] == 8
    with pytest.raises(ConfigError, match=r"#preset=NAME"):
        load_benchmark(str(src))  # columns no preset knows
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        load_benchmark(f"{src}#colour=red")
    with pytest.raises(ConfigError, match="out of range"):
        load_benchmark(str(src), max_distance=40)


def test_unreadable_benchmarks_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"benchmark '.*missing\.jsonl'.*does not exist"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    with pytest.raises(
        SourceError, match=r"benchmark 'hf:nobody/no-such-benchmark#split=test'.*cannot load Hub dataset"
    ):
        load_benchmark("hf:nobody/no-such-benchmark#split=test")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"question": "  ", "answer": "1", "images": []}) + "\n")
    with pytest.raises(SourceError, match="no usable rows"):
        load_benchmark(str(empty))
