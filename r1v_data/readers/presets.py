"""Column layouts of known datasets, and their detection from a source's columns.

A preset maps sample fields to source columns. A field may name several candidate columns
(the first present one wins); `images` takes every listed column that holds a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r1v_data.errors import ConfigError

FIELDS = (
    "source_id",
    "question",
    "options",
    "answer",
    "solution",
    "images",
    "subject",
    "difficulty",
    "caption",
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    mapping: dict[str, tuple[str, ...]]
    signature: frozenset[str]  # columns whose presence identifies the layout
    image_dir: str = ""  # image paths are relative to this subfolder of the source's folder
    probe: Callable[[dict[str, Any]], bool] | None = None  # content check on the first rows
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # runs before mapping


def _gsm8k_split(row: dict[str, Any]) -> dict[str, Any]:
    # GSM8K answers are "worked solution\n#### 18": the number after #### is the answer.
    text = str(row.get("answer") or "")
    solution, sep, final = text.rpartition("####")
    if not sep:
        return row
    return {**row, "answer": final.strip().replace(",", ""), "solution": solution.strip()}


def _looks_like_gsm8k(row: dict[str, Any]) -> bool:
    return "####" in str(row.get("answer", ""))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "native",
            "r1v's own layout (the bundled sample): id, question, options, answer, images...",
            {
                "source_id": ("id",),
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer",),
                "solution": ("solution",),
                "images": ("images",),
                "subject": ("subject",),
                "difficulty": ("difficulty",),
                "caption": ("caption",),
            },
            frozenset({"question", "answer", "images"}),
        ),
        Preset(
            "mathvision",
            "MATH-Vision (mathllm/MATH-V): id, question, options, answer, level, subject, image",
            {
                "source_id": ("id",),
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer",),
                "solution": ("solution",),
                "images": ("image", "decoded_image"),
                "subject": ("subject",),
                "difficulty": ("level",),
            },
            frozenset({"id", "question", "options", "answer", "level", "subject", "image"}),
        ),
        Preset(
            "math500",
            "MATH / MATH-500: problem, solution, answer, subject, level, unique_id",
            {
                "source_id": ("unique_id",),
                "question": ("problem",),
                "answer": ("answer",),
                "solution": ("solution",),
                "subject": ("subject", "type"),
                "difficulty": ("level",),
            },
            frozenset({"problem", "solution", "answer", "subject", "level", "unique_id"}),
        ),
        Preset(
            "competition_math",
            "AIME / AMC evaluation sets: problem (or question), answer, id, solution",
            {
                "source_id": ("id",),
                "question": ("problem", "question"),
                "answer": ("answer",),
                "solution": ("solution",),
            },
            frozenset({"problem", "answer"}),
        ),
        Preset(
            "gsm8k",
            "GSM8K: question, answer ending in '#### N'",
            {"question": ("question",), "answer": ("answer",), "solution": ("solution",)},
            frozenset({"question", "answer"}),
            probe=_looks_like_gsm8k,
            transform=_gsm8k_split,
        ),
        Preset(
            "r1v",
            "R1-V eval prompts (GeoQA, Super-CLEVR counting): image_path, question, ground_truth",
            {"question": ("question",), "answer": ("ground_truth",), "images": ("image_path",)},
            frozenset({"image_path", "question", "ground_truth"}),
        ),
        Preset(
            "superclevr",
            "Super-CLEVR question files: image_filename, question, answer (images in images/)",
            {
                "source_id": ("question_index",),
                "question": ("question",),
                "answer": ("answer",),
                "images": ("image_filename",),
            },
            frozenset({"image_filename", "image", "question", "answer"}),
            image_dir="images",
        ),
        Preset(
            "vqa",
            "single-image VQA rows: image, question, answer (e.g. Super-CLEVR counting)",
            {
                "source_id": ("id",),
                "question": ("question",),
                "answer": ("answer",),
                "images": ("image",),
            },
            frozenset({"image", "question", "answer"}),
        ),
        Preset(
            "imagefolder",
            "datasets' imagefolder metadata.jsonl: file_name, question, answer",
            {
                "source_id": ("id",),
                "question": ("question",),
                "answer": ("answer",),
                "images": ("file_name",),
                "options": ("options",),
                "subject": ("subject",),
            },
            frozenset({"file_name", "question", "answer"}),
        ),
        Preset(
            "mmmu",
            "MMMU / MMMU-Pro: question with <image N>, options, answer letter, image_1..image_7",
            {
                "source_id": ("id", "row"),
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer",),
                "solution": ("explanation",),
                "images": tuple(f"image_{i}" for i in range(1, 8)),
                "subject": ("subject", "subfield"),
                "difficulty": ("topic_difficulty",),
            },
            frozenset({"question", "options", "answer", "image_1"}),
        ),
    ]
}


def detect(columns: set[str], first_rows: list[dict[str, Any]]) -> Preset:
    """The most specific preset whose signature the columns contain; refuse ties."""
    fits = [
        p
        for p in PRESETS.values()
        if p.signature <= columns and (p.probe is None or any(map(p.probe, first_rows)))
    ]
    # A preset whose signature contains another's is the more specific one (MATH-500 over AIME).
    best = [p for p in fits if not any(p.signature < q.signature for q in fits)]
    if len(best) == 1:
        return best[0]
    shown = ", ".join(sorted(columns)[:20])
    if not best:
        raise ConfigError(
            f"no preset matches the columns ({shown}); pass --preset NAME "
            f"(one of {', '.join(PRESETS)}) or map columns with --map question=COLUMN"
        )
    raise ConfigError(
        f"the columns ({shown}) fit several presets ({', '.join(p.name for p in best)}); pass --preset NAME"
    )


def resolve(
    preset_name: str | None,
    mapping: dict[str, list[str]],
    columns: set[str],
    first_rows: list[dict[str, Any]],
) -> tuple[Preset, dict[str, tuple[str, ...]]]:
    """Pick the preset (named, detected, or none when `mapping` names the question column) and
    overlay the user's mapping on it."""
    unknown = set(mapping) - set(FIELDS)
    if unknown:
        raise ConfigError(f"cannot map {sorted(unknown)}: fields are {', '.join(FIELDS)}")
    if preset_name:
        if preset_name not in PRESETS:
            raise ConfigError(f"unknown preset {preset_name!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset_name]
    elif not columns:  # no row parsed: nothing to detect, every row goes to the quarantine
        preset = PRESETS["native"]
    elif "question" in mapping:
        preset = Preset("custom", "column mapping from flags", {}, frozenset())
    else:
        preset = detect(columns, first_rows)
    merged = {**preset.mapping, **{k: tuple(v) for k, v in mapping.items()}}
    return preset, merged


def parse_map_flags(items: list[str]) -> dict[str, list[str]]:
    """`question=problem`, `images=image_1,image_2` -> {"question": ["problem"], ...}."""
    out: dict[str, list[str]] = {}
    for item in items:
        fld, sep, cols = item.partition("=")
        if not sep or not fld.strip() or not cols.strip():
            raise ConfigError(f"--map {item!r}: expected FIELD=COLUMN[,COLUMN...]")
        out[fld.strip()] = [c.strip() for c in re.split(r",", cols) if c.strip()]
    return out
