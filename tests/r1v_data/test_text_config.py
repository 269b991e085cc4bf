"""Normalisation rules that identity and prompts rely on, and the config precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from r1v_data import text
from r1v_data.config import IngestConfig, load_config
from r1v_data.errors import ConfigError


def test_placeholders_are_normalised() -> None:
    q = "See <image 1>, <image_2>, <IMG3> and <image4>."
    assert text.normalise_placeholders(q) == "See <image1>, <image2>, <image3> and <image4>."


def test_options_render_one_way() -> None:
    assert text.render_question("Pick one.", ["1", "2"]) == "Pick one.\n\nChoices:\n(A) 1\n(B) 2"
    assert text.render_question("Pick.", ["A", "B"]) == "Pick.\n\nChoices:\n(A)\n(B)"
    assert text.render_question("Free form.", []) == "Free form."
    assert text.parse_options("['x', 'y']") == ["x", "y"]
    with pytest.raises(ValueError):
        text.parse_options(7)


@pytest.mark.parametrize(
    "answer, choice, kind",
    [
        ("42", False, "integer"),
        ("-3.5", False, "number"),
        ("140°", False, "number"),
        ("1,234", False, "integer"),
        ("True", False, "boolean"),
        ("\\frac{1}{2}", False, "expression"),
        ("x + 1", False, "expression"),
        ("red", False, "text"),
        ("B", True, "multiple_choice"),
        (None, False, None),
    ],
)
def test_answer_types(answer: str | None, choice: bool, kind: str | None) -> None:
    assert text.answer_type(answer, choice) == kind


def test_option_letters_from_letters_or_text() -> None:
    assert text.match_option_letter("(b)", ["x", "y"]) == "B"
    assert text.match_option_letter("y", ["x", "y"]) == "B"
    assert text.match_option_letter("z", ["x", "y"]) is None
    assert text.answer_to_text(27.0) == "27" and text.answer_to_text(False) == "False"
    assert text.parse_difficulty("Level 4") == 4 and text.parse_difficulty("hard") is None


@given(st.text(min_size=1), st.sampled_from([" ", "  ", "\n", "\t "]))
def test_sample_id_ignores_whitespace_layout(question: str, gap: str) -> None:
    spaced = gap + question.replace(" ", gap) + gap
    assert text.sample_id(spaced, ["abc"]) == text.sample_id(question, ["abc"])


def test_sample_id_depends_on_case_and_images() -> None:
    assert text.sample_id("Find a", []) != text.sample_id("Find A", [])
    assert text.sample_id("q", ["1", "2"]) != text.sample_id("q", ["2", "1"])
    assert text.sample_id("q", ["1"]) != text.sample_id("q", [])


def test_config_precedence(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("ingest:\n  store: from_yaml\n  sources: [a]\n  max_pixels: 10\n  workers: 2\n")
    cfg = load_config(
        IngestConfig,
        yaml_path=yaml_file,
        section="ingest",
        sets=["max_pixels=20", "mapping.question=[problem]"],
        flags={"store": Path("from_flag"), "workers": None},
    )
    assert cfg.store == Path("from_flag")  # flag beats YAML
    assert cfg.max_pixels == 20  # --set beats YAML
    assert cfg.workers == 2  # an unset flag leaves YAML alone
    assert cfg.mapping == {"question": ["problem"]}
    assert cfg.max_image_bytes == 64 << 20  # default


@pytest.mark.parametrize(
    "sets, message",
    [
        (["no_such_key=1"], "no_such_key: no such setting"),
        (["max_pixel=1"], r"max_pixel: no such setting \(did you mean 'max_pixels'\?\)"),
        (["max_pixels=-5"], "max_pixels"),
        (["oops"], "expected KEY=VALUE"),
    ],
)
def test_config_errors_are_clear(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(IngestConfig, sets=sets, flags={"store": Path("s"), "sources": ["a"]})
