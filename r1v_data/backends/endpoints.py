"""Several servers of one model (`openai:URL1,URL2,...#MODEL`, e.g. one `vllm serve` per node),
balanced by the client: each request goes to the endpoint with the fewest requests in flight, and
an endpoint that refused a connection is left out for a while (unless all are down), so a node
that goes away costs retries, not the run.

Used from the client's one event-loop thread only: no locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DOWN_FOR_S = 10.0  # how long an endpoint that refused a connection is passed over


@dataclass
class Endpoint:
    base_url: str
    path: str = "/chat/completions"  # the API's generation route under the root
    in_flight: int = 0
    down_until: float = 0.0
    sent: int = 0

    @property
    def chat_url(self) -> str:
        return self.base_url + self.path


class Endpoints:
    def __init__(self, spec_url: str):
        self.all = [Endpoint(u.strip().rstrip("/")) for u in spec_url.split(",") if u.strip()]
        self._turn = 0  # breaks ties in turn, so equal endpoints share the load evenly

    def __len__(self) -> int:
        return len(self.all)

    def acquire(self) -> Endpoint:
        """The endpoint for the next attempt (counted in flight until `release`)."""
        now = time.monotonic()
        up = [e for e in self.all if e.down_until <= now] or self.all
        self._turn += 1
        n = len(up)
        best = min(range(n), key=lambda i: (up[i].in_flight, (i - self._turn) % n))
        chosen = up[best]
        chosen.in_flight += 1
        chosen.sent += 1
        return chosen

    def release(self, endpoint: Endpoint, *, unreachable: bool = False) -> None:
        endpoint.in_flight -= 1
        if unreachable and len(self.all) > 1:
            endpoint.down_until = time.monotonic() + DOWN_FOR_S
