"""`anthropic-batch:MODEL` (or `anthropic-batch:URL#MODEL`): Anthropic's Message Batches API, half
the price of the Messages API.

Wire format (https://docs.anthropic.com/en/api/creating-message-batches): `POST
/messages/batches` with `{"requests": [{"custom_id", "params"}]}` (`params` is a Messages API
body), headers `x-api-key` and `anthropic-version`; `GET /messages/batches/{id}` reports
`processing_status` (in_progress, canceling, ended) and `request_counts` (processing, succeeded,
errored, canceled, expired); once ended, `results_url` serves JSONL lines
`{"custom_id", "result": {"type": succeeded | errored | canceled | expired, ...}}`.
Limits: 100,000 requests and 256 MB per batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from r1v_data.backends import anthropic_wire as wire
from r1v_data.backends.base import GenRequest, GenResult
from r1v_data.backends.batch.adapter import BatchInfo
from r1v_data.backends.batch.http import HttpClient
from r1v_data.redact import redact

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


class AnthropicBatchAdapter:
    provider = "anthropic"

    def __init__(
        self,
        rest: str,
        *,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        api_key_env: str = "ANTHROPIC_API_KEY",
        prefill: bool = True,
        thinking_budget: int | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
    ):
        url, sep, model = rest.rpartition("#")
        self.model = model
        base = url if sep else wire.DEFAULT_URL
        self.url = redact(base.rstrip("/"))
        self.identity = f"anthropic:{model}"
        self.thinking_budget = thinking_budget
        self.prefills = bool(prefill) and not thinking_budget
        self.max_requests = min(int(max_requests), MAX_REQUESTS)
        self.max_bytes = min(int(max_bytes), MAX_BYTES)
        key = os.environ.get(api_key_env) or None
        self.http = HttpClient(base, wire.headers(key), name=redact(f"anthropic-batch:{rest}"), timeout_s=timeout_s,
                               max_retries=max_retries, backoff_base_s=backoff_base_s, secret=key)  # fmt: skip

    def _body(self, request: GenRequest, inline: bool = True) -> dict[str, Any]:
        return wire.body(request, self.model, prefill=self.prefills, thinking_budget=self.thinking_budget,
                         inline_images=inline)  # fmt: skip

    def render(self, request: GenRequest) -> str:
        return json.dumps(
            self._body(request, inline=False), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )

    def line(self, request: GenRequest) -> bytes:
        return json.dumps(
            {"custom_id": request.request_id, "params": self._body(request)}, ensure_ascii=False
        ).encode()

    def submit(self, lines: list[bytes]) -> tuple[str, str | None]:
        payload = b'{"requests": [' + b",".join(lines) + b"]}"
        batch = self.http.json("POST", "/messages/batches", payload)
        return str(batch["id"]), None

    def retrieve(self, batch_id: str) -> BatchInfo:
        batch = self.http.json("GET", f"/messages/batches/{batch_id}")
        state = str(batch.get("processing_status"))
        counts = {k: int(v or 0) for k, v in (batch.get("request_counts") or {}).items()}
        total = sum(counts.values())
        refs = {"results_url": batch["results_url"]} if batch.get("results_url") else {}
        cancelled = bool(batch.get("cancel_initiated_at"))
        return BatchInfo(state, state == "ended", total - counts.get("processing", 0), total,
                         resubmit=not cancelled, refs=refs, counts=json.dumps(counts, sort_keys=True))  # fmt: skip

    def results(self, batch_id: str, info: BatchInfo, prefixes: dict[str, str]) -> Iterator[GenResult | str]:
        url = info.refs.get("results_url") or f"/messages/batches/{batch_id}/results"
        for line in self.http.call("GET", url).splitlines():
            if line.strip():
                yield self._result(json.loads(line), prefixes)

    def cancel(self, batch_id: str) -> None:
        self.http.json("POST", f"/messages/batches/{batch_id}/cancel")

    def _result(self, entry: dict[str, Any], prefixes: dict[str, str]) -> GenResult | str:
        rid = str(entry.get("custom_id"))
        result = entry.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            return wire.parse(rid, result.get("message"), bool(prefixes.get(rid)))
        if kind == "errored":
            message, rejected = wire.error_message(result.get("error"))
            return GenResult(rid, finish_reason="rejected" if rejected else "error", error=redact(message))
        return rid  # canceled or expired: never ran
