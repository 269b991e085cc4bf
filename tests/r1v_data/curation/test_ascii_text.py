"""The numpy forms of the exact-dedup key and the decontamination words (`ascii_text`) against
the Python references they stand in for, on the real questions in ../shared/data and on fuzzed
ASCII built to reach every rule (separators, punctuation beside spaces, numbers with dots, the
triggers of `overlap.words`' rewrites)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from r1v_data.curation import decontam
from r1v_data.curation.ascii_text import MAX_TOKEN, duplicate_keys, join_ascii, word_hashes, word_tokens
from r1v_data.curation.dedup import duplicate_key, exact_digest, exact_digests
from r1v_data.curation.overlap import words

PIECES = ["1.2.3", "4.5", ".6", "7.", "a1b", "12,345", "1{,}000", "Choices:", "x_y", "3.14.15.9", "ab..c",
          "1..2", "é", "ñ1", "<image1>", "[asy]", "\\frac", "A", "What", "?", "(", ")", "+", "-", "=", ",",
          "\t", "\n", "\x00", "\x01", "\x1f", "\x7f", "  ", "_", "perpendicularities", "x" * 30]  # fmt: skip


@pytest.fixture(scope="module")
def questions(shared: Path) -> list[str]:
    """Every question and problem of the text benchmarks and MATH-Vision, and fuzzed text."""
    out = []
    for path in [
        *sorted((shared / "text_math").glob("*.jsonl")),
        shared / "mathv_testmini" / "testmini.jsonl",
    ]:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out += [row[k] for k in ("problem", "question") if isinstance(row.get(k), str)]
    rng = random.Random(0)
    alphabet = "aZ09.,{}<>[]\\ \t\n\x00\x01\x1f\x7f_-+=?!:;()$^é" + "abcdefghijklmnopqrstuvwxyz"
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    out += [
        rng.choice(["", " "]).join(rng.choice(PIECES) for _ in range(rng.randint(0, 9))) for _ in range(3000)
    ]
    return [*out, "", " ", "\n", "a", "A B", " lead and trail \t"]


def test_duplicate_keys_equal_duplicate_key_on_every_ascii_text(questions: list[str]) -> None:
    joined = join_ascii(questions)
    assert 5000 < len(joined.index) < len(questions)  # the non-ASCII ones are left to Python
    keys = duplicate_keys(joined)
    assert keys == [duplicate_key(questions[i]).encode() for i in joined.index.tolist()]


def test_exact_digests_are_exact_digest_for_every_text(questions: list[str]) -> None:
    shas = [[f"{i:064x}"] if i % 3 == 0 else None for i in range(len(questions))]
    want = b"".join(exact_digest(q, s or ()) for q, s in zip(questions, shas, strict=True))
    assert exact_digests(questions, shas) == want


def test_word_tokens_are_the_words_of_the_texts_they_take(questions: list[str]) -> None:
    joined = join_ascii(questions)
    tokens = word_tokens(joined)
    ends = np.cumsum(tokens.counts)
    taken = 0
    for k, i in enumerate(joined.index.tolist()):
        if tokens.taken[k]:
            taken += 1
            expected = words(questions[i])
            index, hashes = word_hashes(expected)
            assert len(index) == len(expected) and tokens.hashes[ends[k] - tokens.counts[k] : ends[k]].tolist() == hashes.tolist(), repr(questions[i])  # fmt: skip
        else:
            assert tokens.counts[k] == 0
    assert taken > 0.4 * len(joined.index)  # the rest hold LaTeX, commas before digits, placeholders
    # the rewrites' triggers send a text to `words`; so does a word longer than MAX_TOKEN bytes
    rewritten = [
        "see <image1>",
        "1,000 apples",
        "x{,}y",
        "\\pi r",
        "[asy] draw",
        "Choices: (A)",
        "x" * (MAX_TOKEN + 1),
    ]
    assert not word_tokens(join_ascii(rewritten)).taken.any()
    assert word_tokens(join_ascii(["a, b", "1, 2", "3.5 x", "x" * MAX_TOKEN])).taken.all()


def test_check_all_finds_what_the_plain_test_finds(questions: list[str], shared: Path) -> None:
    """check_all skips the Python test for candidates whose words share no n-gram with any index;
    the hits, their evidence and their order across benchmarks stay those of the plain test."""
    text_math = shared / "text_math"
    benchmarks = [decontam.load_benchmark(str(text_math / "math500_test.jsonl")),
                  decontam.load_benchmark(str(text_math / "gsm8k_test.jsonl"), ngram=8),
                  decontam.load_benchmark(str(shared / "mathv_testmini" / "testmini.jsonl"), min_fraction=0.2)]  # fmt: skip
    rng = random.Random(1)
    edited = [" ".join(w if rng.random() > 0.05 else "zebra" for w in q.split(" ")) for q in questions[:2000]]
    candidates = questions + edited + [q.upper() + " Thanks." for q in questions[:500]]
    hits = decontam.check_all(benchmarks, candidates)
    assert hits == decontam._check_exact(benchmarks, candidates, None)
    assert sum(h is not None for h in hits) > 1500  # the benchmarks' own questions, and their edits
