"""What differs between providers' batch APIs, behind one small protocol; the state machine in
`core.py` is shared. An adapter turns a request into one line of the provider's batch input,
submits lines as a batch, reports a batch's state, and reads its results back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from r1v_data.backends.base import GenRequest, GenResult


@dataclass
class BatchInfo:
    """A batch as the provider describes it at one poll."""

    state: str  # the provider's own word (in_progress, finalizing, ended, ...)
    terminal: bool  # no more results will come
    done: int = 0  # requests the provider has finished (succeeded or failed)
    total: int = 0
    # when terminal: True if requests left without a result may be sent again (expired); False
    # when the batch failed or was cancelled (the same input would fail again, or a person
    # stopped it): those requests then fail for this run and a later run sends them again
    resubmit: bool = True
    error: str | None = None  # why the whole batch failed
    refs: dict[str, str] = field(default_factory=dict)  # where its results are (file ids, url)
    counts: str = ""  # the provider's request counts, as it words them


class Adapter(Protocol):
    provider: str  # openai | anthropic
    max_requests: int
    max_bytes: int
    url: str  # the API root, without credentials
    identity: str
    prefills: bool

    def render(self, request: GenRequest) -> str: ...

    def line(self, request: GenRequest) -> bytes:
        """The request as one line of the batch input (with `custom_id` = its request id)."""
        ...

    def submit(self, lines: list[bytes]) -> tuple[str, str | None]:
        """Create a batch of these lines; its id and the input file's id (if any)."""
        ...

    def retrieve(self, batch_id: str) -> BatchInfo: ...

    def results(self, batch_id: str, info: BatchInfo, prefixes: dict[str, str]) -> Iterator[GenResult | str]:
        """The batch's results; a bare request id for a request the provider left without one
        (expired, cancelled before it ran). `prefixes` holds each request's assistant prefix."""
        ...

    def cancel(self, batch_id: str) -> None: ...
