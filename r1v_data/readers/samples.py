"""Turn one source row into a sample row, or into the reason it cannot be one.

This is the per-row half of ingest: it runs on worker threads and never touches the store.
Every failure becomes a `Prepared` with a quarantine reason; nothing here raises for bad data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from r1v_data import text
from r1v_data.errors import SchemaError
from r1v_data.readers.images import ImageLimits, ImageRejected, load_image
from r1v_data.readers.presets import Preset
from r1v_data.readers.sources import RAW_LIMIT, Record
from r1v_data.store import schema, utcnow


@dataclass
class RowPlan:
    """How rows of one source map to samples."""

    preset: Preset
    mapping: dict[str, tuple[str, ...]]
    image_base: Path  # relative image paths resolve here
    image_root: Path  # ... and may not leave this folder
    limits: ImageLimits
    require_question: bool = False  # quarantine rows whose question is only in their image


@dataclass
class Prepared:
    location: str
    sample: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
    raw: str | None = None
    image_bytes: int = 0


class BadRow(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


_PLACEHOLDER_BOOKKEEPING = {
    "source": "-",
    "run_id": "-",
    "created_at": datetime(2000, 1, 1, tzinfo=UTC),
}


def prepare(record: Record, plan: RowPlan, validate: bool = True) -> Prepared:
    """One source row -> a sample row (without store bookkeeping) or a quarantine reason. Without
    `validate` the schema check is the caller's: `conforming` checks many rows at once."""
    if record.error:
        return Prepared(record.location, reason=record.error[0], detail=record.error[1], raw=record.raw)
    row = record.data or {}
    try:
        sample = _sample(row, plan, validate)
    except (ImageRejected, BadRow) as exc:
        return Prepared(record.location, reason=exc.reason, detail=exc.detail, raw=raw_text(row))
    except Exception as exc:  # a bug or an input no rule foresaw: still a row, never a crash
        detail = f"{type(exc).__name__}: {exc}"[:500]
        return Prepared(record.location, reason="unreadable record", detail=detail, raw=raw_text(row))
    size = sum(len(im["bytes"]) for im in sample["images"])
    return Prepared(record.location, sample=sample, image_bytes=size)


def _sample(row: dict[str, Any], plan: RowPlan, validate: bool = True) -> dict[str, Any]:
    if plan.preset.transform:
        row = plan.preset.transform(row)
    refs = _image_refs(row, plan.mapping.get("images", ()))
    # An empty question is the image's to ask, unless there is no image or --require-question.
    why_not = "and no image" if not refs else "--require-question" if plan.require_question else None
    sample = _fields(row, plan.mapping, why_not)
    try:  # JSON escapes can smuggle in lone surrogates, which no UTF-8 file can hold
        json.dumps(sample, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRow("invalid utf-8", f"text holds an unencodable character: {exc.reason}") from exc
    sample["images"] = [load_image(ref, plan.image_base, plan.limits, plan.image_root) for ref in refs]
    sample["sample_id"] = text.sample_id(sample["question"], [im["sha256"] for im in sample["images"]])
    if validate:  # here, per row, so one bad value is one quarantined row, not a failed part
        try:
            schema.conform([{**sample, **_PLACEHOLDER_BOOKKEEPING}], "samples")
        except SchemaError as exc:
            raise BadRow("invalid record", str(exc)) from exc
    return sample


def conforming(samples: list[dict[str, Any]]) -> list[bool]:
    """Whether each sample (from `prepare` without `validate`) passes the check `prepare` makes:
    all at once, and one by one only when some row fails (alone, a row costs ~1 ms)."""
    try:
        schema.conform([{**s, **_PLACEHOLDER_BOOKKEEPING} for s in samples], "samples")
        return [True] * len(samples)
    except SchemaError:
        return [_conforms(s) for s in samples]


def _conforms(sample: dict[str, Any]) -> bool:
    try:
        schema.conform([{**sample, **_PLACEHOLDER_BOOKKEEPING}], "samples")
        return True
    except SchemaError:
        return False


def _fields(row: dict[str, Any], m: dict[str, tuple[str, ...]], why_not: str | None) -> dict[str, Any]:
    question = _question(row, m.get("question", ()), why_not)
    try:
        options = text.parse_options(_pick(row, m.get("options", ())))
    except ValueError as exc:
        raise BadRow("invalid options", str(exc)) from exc
    answer = text.answer_to_text(_pick(row, m.get("answer", ())))
    letter = text.match_option_letter(answer, options) if answer and options else None
    if (
        options
        and answer
        and letter is None
        and len(answer.strip("() .")) == 1
        and answer.strip("() .").isalpha()
    ):
        raise BadRow("answer not among options", f"answer {answer!r} but {len(options)} options")
    used = {c for cols in m.values() for c in cols}
    extra = {k: jsonable(v) for k, v in row.items() if k not in used}
    raw_difficulty = _pick(row, m.get("difficulty", ()))
    difficulty = text.parse_difficulty(raw_difficulty)
    if raw_difficulty is not None and difficulty is None:
        extra["difficulty_raw"] = jsonable(raw_difficulty)  # kept, not lost
    if not question:
        extra[QUESTION_IN_IMAGE] = True
    return {
        "source_id": _str_or_none(_pick(row, m.get("source_id", ()))),
        "question": text.render_question(text.normalise_placeholders(question), options),
        "options": options,
        "answer": letter or answer,
        "answer_type": text.answer_type(letter or answer, is_choice=letter is not None),
        "solution": _str_or_none(_pick(row, m.get("solution", ()))),
        "subject": _str_or_none(_pick(row, m.get("subject", ()))),
        "difficulty": difficulty,
        "caption": _str_or_none(_pick(row, m.get("caption", ()))),
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
    }


# The flag in `extra` of a sample whose text question is empty: the question is in its image (a
# VQA row such as "read the problem in the picture"), which ingest accepts unless told
# --require-question.
QUESTION_IN_IMAGE = "question_in_image"


def _question(row: dict[str, Any], columns: tuple[str, ...], why_not: str | None) -> str:
    """The question text; "" for a row whose question is only in its image (`why_not` is None)."""
    value = _pick(row, columns)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if why_not is None and (value is None or isinstance(value, str)):
        return ""
    raise BadRow(
        "missing question", f"no question text in column(s) {list(columns)} ({why_not or 'not text'})"
    )


def _pick(row: dict[str, Any], columns: tuple[str, ...]) -> Any:
    for col in columns:
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and value != value):  # NaN is missing
            return value
    return None


def _image_refs(row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    refs: list[Any] = []
    for col in columns:
        value = row.get(col)
        if isinstance(value, list):
            refs.extend(v for v in value if v is not None)
        elif value is not None:
            refs.append(value)
    return refs


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def jsonable(value: Any) -> Any:
    """A value that json.dumps writes as standard JSON (bytes summarised, NaN as null)."""
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def raw_text(row: dict[str, Any]) -> str:
    try:
        text_ = json.dumps(jsonable(row), ensure_ascii=False, default=str)[:RAW_LIMIT]
    except (ValueError, RecursionError):
        text_ = repr(row)[:RAW_LIMIT]
    return text_.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be stored


def quarantine_row(
    source: str, uri: str, location: str, reason: str, detail: str | None, raw: str | None, run_id: str
) -> dict[str, Any]:
    """A quarantine row; its id hashes where the input was and why it failed, so recording the
    same bad input again can be recognised and skipped."""
    return {
        "quarantine_id": text.stable_hash(uri, location, reason),
        "source": source,
        "source_path": uri,
        "location": location,
        "reason": reason,
        "detail": detail,
        "raw": raw,
        "run_id": run_id,
        "created_at": utcnow(),
    }
