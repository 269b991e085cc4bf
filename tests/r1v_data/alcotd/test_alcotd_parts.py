"""DRLC's formula and local image clarity: the first pieces of AL-CoTD (issue 5)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from r1v_data.alcotd.calibration import GROUPS, Cell, Target, fit, question_reuse, spread, thirds
from r1v_data.alcotd.clarity import image_measures, sample_clarity
from r1v_data.alcotd.drlc import MAX_PENALTY, NEUTRAL, min_max, penalties, penalty


def test_penalty_matches_hand_computed_values() -> None:
    # combined = (0.2 + 2*0.5 + 1*0.8) / 4 = 0.5 -> P = exp(0.6 * 0.5) = e^0.3
    assert penalty(0.2, 0.5, 0.8, alpha=0.6, beta=2.0, gamma=1.0) == pytest.approx(math.exp(0.3))
    assert penalty(1, 1, 1) == pytest.approx(1.0)  # hardest: long chains allowed
    assert penalty(0, 0, 0) == pytest.approx(2.0)  # easiest, default alpha = ln 2: exactly 2
    assert penalty(0, 0, 0, alpha=5.0) == MAX_PENALTY  # clipped at 2
    with pytest.raises(ValueError):
        penalty(0.5, 0.5, 0.5, beta=-1)


def test_normalisation_over_the_dataset() -> None:
    assert min_max([2.0, 4.0, None, 3.0]) == [0.0, 1.0, None, 0.5]
    assert min_max([7.0, 7.0]) == [NEUTRAL, NEUTRAL]  # all equal: no information
    out = penalties([1, 2, 3], [5, 5, 5], [0, 5, 10])
    assert out[0] > out[1] > out[2] and all(1.0 <= p <= 2.0 for p in out)


def _blurred(data: bytes, radius: float) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").filter(ImageFilter.GaussianBlur(radius)).save(buf, "PNG")
    return buf.getvalue()


def test_a_blurred_copy_of_a_real_image_scores_lower(shared: Path) -> None:
    for name in ("10.jpg", "100.jpg", "4.jpg"):
        sharp = (shared / "mathv_testmini" / "images" / name).read_bytes()
        clear, blurred = image_measures(sharp), image_measures(_blurred(sharp, 3))
        assert blurred["laplacian_var"] < clear["laplacian_var"] / 4
        assert blurred["clarity"] < clear["clarity"]
    assert sample_clarity([]) is None
    small = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(small, "PNG")
    assert image_measures(small.getvalue())["resolution"] == pytest.approx(48 / 448)


def test_missing_scores_count_as_neutral() -> None:
    with_gap = penalties([0.0, 1.0], [0.0, 1.0], [None, None])
    assert with_gap[1] == pytest.approx(penalty(1.0, 1.0, NEUTRAL))


def test_a_huge_question_is_read_only_as_far_as_its_cues_can_tell() -> None:
    """A 50 MB question took minutes to score; its estimates are those of its first MAX_CHARS."""
    from r1v_data.alcotd.estimators import MAX_CHARS, estimate

    head = ("Find the area of triangle ABC in the image, given AB = 3 and BC = 4. " * 400)[:MAX_CHARS]
    huge = head + "x" * 50_000_000
    assert estimate({"question": huge, "images": []}) == estimate({"question": head, "images": []})


def test_calibration_spreads_groups_and_fits() -> None:
    ranked = [f"s{i}" for i in range(10)]
    assert spread(ranked, 4) == ["s0", "s3", "s6", "s9"] and spread(ranked, 20) == ranked
    groups = thirds(["a", "b", "c", "d", "e", "f"])
    assert [groups[k] for k in "abcdef"] == [GROUPS[0]] * 2 + [GROUPS[1]] * 2 + [GROUPS[2]] * 2
    assert question_reuse("How many circles are there?", "I count the circles: three") == pytest.approx(1 / 3)

    def easy(penalty: float, tokens: float, accuracy: float, formed: float = 1.0) -> Cell:
        return Cell(penalty, GROUPS[0], 3, tokens, accuracy, formed, 0.5)

    target = Target(shorten=0.3)
    assert fit([easy(1.0, 100, 0.6), easy(1.2, 80, 0.6), easy(1.4, 60, 0.6)], target).penalty_range == (
        1.0,
        1.4,
    )
    costly = fit([easy(1.0, 100, 0.6), easy(1.2, 50, 0.3), easy(1.4, 40, 0.6, formed=0.5)], target)
    assert costly.penalty_range == (1.0, 1.0) and not costly.met and "accuracy or form" in costly.why
