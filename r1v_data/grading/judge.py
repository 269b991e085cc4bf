"""Asking a judge model for strict JSON, through any backend, with one repair attempt.

A judge reply is parsed by a caller-given function that raises `ValueError` saying what is wrong.
An invalid reply gets exactly one retry, in the same conversation, told what was wrong; a
second invalid reply (or a backend error) is a recorded failure, never a made-up score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from r1v_data import text
from r1v_data.backends import Backend, GenRequest, Message, Sampling

JUDGE_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=512, seed=0)
_FIX = (
    "That reply could not be used: {why}. Reply again with only the JSON object, no other text, "
    "no code fence."
)
_THINK = re.compile(r"^\s*(?:<think>)?.*?</think>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


@dataclass
class Ask:
    key: str  # what the verdict is about (a sample id, a request id)
    messages: list[Message]


@dataclass
class Answer:
    key: str
    values: dict[str, float] | None  # None: the judge failed, `detail` says why
    detail: str
    attempts: int


Parser = Callable[[str], dict[str, float]]


def ask_json(
    backend: Backend,
    asks: Iterable[Ask],
    parse: Parser,
    sampling: Sampling = JUDGE_SAMPLING,
    usage: Any = None,
) -> Iterator[Answer]:
    """One Answer per Ask, in any order; invalid replies are retried once after all first tries.
    `usage` (anything with `prompt_tokens` and `completion_tokens` counters) adds up the tokens."""
    retry: list[tuple[Ask, str, str]] = []
    for ask, reply, error in _send(backend, asks, sampling, attempt=1, usage=usage):
        answer = _answer(ask, reply, error, parse, attempt=1)
        if answer is None:
            retry.append((ask, reply or "", _why(reply, parse)))
        else:
            yield answer
    repairs = (
        Ask(a.key, [*a.messages, Message("assistant", reply), Message("user", _FIX.format(why=why))])
        for a, reply, why in retry
    )
    for ask, reply, error in _send(backend, repairs, sampling, attempt=2, usage=usage):
        yield _answer(ask, reply, error, parse, attempt=2) or Answer(
            ask.key, None, f"judge reply invalid twice: {_why(reply, parse)}; reply: {_clip(reply)}", 2
        )


def _answer(ask: Ask, reply: str | None, error: str | None, parse: Parser, attempt: int) -> Answer | None:
    """The answer, a failure for a backend error, or None when the reply is invalid (retry)."""
    if error is not None:
        return Answer(ask.key, None, f"judge request failed: {error}", attempt)
    try:
        return Answer(ask.key, parse(reply or ""), f"judge reply: {_clip(reply)}", attempt)
    except ValueError:
        return None


def _why(reply: str | None, parse: Parser) -> str:
    try:
        parse(reply or "")
    except ValueError as exc:
        return str(exc)
    return "unknown"


def _clip(reply: str | None, limit: int = 300) -> str:
    flat = " ".join((reply or "").split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _send(
    backend: Backend, asks: Iterable[Ask], sampling: Sampling, attempt: int, usage: Any = None
) -> Iterator[tuple[Ask, str | None, str | None]]:
    pending: dict[str, Ask] = {}

    def requests() -> Iterator[GenRequest]:
        for ask in asks:
            # the prompt is part of the id: one sample's QDAM and VTIA asks are different requests
            # (a batch backend recognises a request it already submitted by its id)
            rid = text.stable_hash("judge", ask.key, attempt, [m.text for m in ask.messages])
            pending[rid] = ask
            yield GenRequest(rid, ask.messages, sampling)

    for res in backend.generate(requests()):
        ask = pending.pop(res.request_id)
        if usage is not None:
            usage.prompt_tokens += res.prompt_tokens or 0
            usage.completion_tokens += res.completion_tokens or 0
        yield ask, res.text, res.error
    for ask in pending.values():
        yield ask, None, "no result from the backend"


def json_object(reply: str) -> dict[str, Any]:
    """The first JSON object in a reply. Judges often wrap it in a code fence or a sentence of
    prose; both are tolerated, as long as what is inside the braces is valid JSON."""
    body = _FENCE.sub("", _THINK.sub("", reply).strip())  # a reasoning judge thinks before it answers
    start = body.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    try:
        value, _ = json.JSONDecoder().raw_decode(body, start)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at character {exc.pos})") from None
    return value  # a dict: decoding started at a brace


def integer_fields(names: tuple[str, ...], low: int, high: int) -> Parser:
    """A parser requiring each of `names` as an integer in [low, high]; other keys are ignored."""

    def parse(reply: str) -> dict[str, float]:
        obj = json_object(reply)
        missing = [n for n in names if n not in obj]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        out = {}
        for name in names:
            value = obj[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise ValueError(f"{name} must be an integer, got {json.dumps(value)}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
            out[name] = float(value)
        return out

    return parse
