"""Request and token budgets per minute (`rpm`, `tpm` teacher options) for online backends.

Requests are paced, not burst: each reserves the next slot of a schedule whose slots are
`60/rpm` seconds apart, or longer for a request that spends many of the `tpm` tokens (its
estimated prompt plus its completion limit, which is what providers count against the limit).
Pacing keeps any minute-long window within the budget, so a hosted API never answers 429 for
r1v's own pace. A 429 with Retry-After pushes the whole schedule back, not only that request.
With no budget the backend holds no `RateBudget` at all and pays nothing.
"""

from __future__ import annotations

import time


class RateBudget:
    def __init__(self, rpm: float | None, tpm: float | None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self.request_s = 60.0 / rpm if rpm else 0.0
        self.token_s = 60.0 / tpm if tpm else 0.0
        self.next_at = 0.0  # time.monotonic() of the next free slot

    @classmethod
    def make(cls, rpm: float | None, tpm: float | None) -> RateBudget | None:
        return cls(rpm, tpm) if rpm or tpm else None

    def reserve(self, tokens: int) -> float:
        """Take the next slot for a request of about `tokens` tokens; seconds to wait for it."""
        now = time.monotonic()
        start = max(now, self.next_at)
        self.next_at = start + max(self.request_s, tokens * self.token_s)
        return start - now

    def pause(self, seconds: float) -> None:
        """The server said to wait (429 Retry-After): no request starts before then."""
        self.next_at = max(self.next_at, time.monotonic() + seconds)


def estimate_tokens(payload_bytes: int, max_tokens: int) -> int:
    """A request's cost against a token budget before it is sent: about 4 bytes of JSON per
    prompt token (images count as their base64 bytes here, an over-estimate that errs safe), plus
    the completion limit."""
    return payload_bytes // 4 + max_tokens
