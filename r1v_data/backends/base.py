"""The one small protocol every teacher, judge or reward backend implements.

A backend takes `GenRequest`s and yields one `GenResult` per request, in any order. It never
raises for a single failed request: the result carries `error` and the request is recorded as a
failed trace row. It raises `BackendError` only when it cannot work at all (model missing,
server unreachable for good).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from r1v_data.errors import R1VError


class BackendError(R1VError):
    """A backend cannot be built or has stopped working as a whole."""


@dataclass(frozen=True)
class Sampling:
    """Per-request sampling parameters; recorded in full in every trace's `sampling` struct."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int | None = None
    repetition_penalty: float = 1.0
    max_tokens: int = 1024
    seed: int | None = 0
    n: int = 1  # samples per prompt; each becomes its own request (own sample_index and id)

    def as_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: its deep copy showed up in generate's profile
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass
class Message:
    role: str  # system | user | assistant
    text: str
    images: list[bytes] = field(default_factory=list)  # encoded image files, shown before the text


@dataclass
class GenRequest:
    request_id: str
    messages: list[Message]
    sampling: Sampling
    # Text the assistant turn starts with (R1V starts it with "<think>\n"); backends that can
    # prefill put it in the prompt, the others ask for it in the instructions.
    assistant_prefix: str = ""


@dataclass
class GenResult:
    request_id: str
    text: str | None = None  # the completion, without the assistant prefix
    # stop | length | error (may succeed if sent again) | rejected (the server refused this
    # request for good: a 4xx about the request itself, not sent again unless asked)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None  # why the request failed; text is None then
    latency_s: float | None = None


class Backend(Protocol):
    spec: str  # e.g. "openai:http://127.0.0.1:8000/v1#Qwen/QwQ-32B"
    # What request ids and the `teacher` column name: the model, not where it is served from
    # (an openai: server restarted on another port is the same teacher).
    identity: str
    supports_images: bool
    prefills: bool  # the completion continues `assistant_prefix` (else the prefix is not sent)

    def render(self, request: GenRequest) -> str:
        """The exact prompt the model will see, as text: part of the request identity."""
        ...

    def generate(self, requests: Iterable[GenRequest]) -> Iterator[GenResult]: ...

    def close(self) -> None: ...


class BatchesPending(R1VError):
    """A batch backend asked not to wait (`--no-wait`) submitted its requests, collected what had
    finished and stopped: the rest are recorded in the store's `batches` table and a later run of
    the same command collects them."""

    def __init__(self, requests: int, batches: int, states: dict[str, int]):
        self.requests, self.batches, self.states = requests, batches, states
        super().__init__(
            f"{requests} requests wait in {batches} provider batches; run the same command again to collect"
        )
