"""`openai-batch:URL#MODEL`: the OpenAI Batch API, for half the price of the online API.

Wire format (https://platform.openai.com/docs/guides/batch): the requests go up as a JSONL file
(`POST /files`, multipart, `purpose=batch`), one line per request
`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}` with the same
body the `openai:` backend sends; `POST /batches` creates the batch from the file id;
`GET /batches/{id}` reports `status` (validating, in_progress, finalizing, completed, expired,
cancelling, cancelled, failed) and `request_counts`; the results are the JSONL files
`output_file_id` (`{"custom_id", "response": {"status_code", "body"}}`) and `error_file_id`
(failed lines, and expired ones with `error.code = "batch_expired"`), read with
`GET /files/{id}/content`. Limits: 50,000 requests and 200 MB per input file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from r1v_data.backends.base import GenRequest, GenResult, Sampling
from r1v_data.backends.batch.adapter import BatchInfo
from r1v_data.backends.batch.http import HttpClient
from r1v_data.backends.openai_compat import OpenAIBackend
from r1v_data.backends.openai_wire import body_snippet
from r1v_data.redact import redact

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
_TERMINAL = {"completed": True, "expired": True, "cancelled": False, "failed": False}
_ENDPOINT = "/v1/chat/completions"


class OpenAIBatchAdapter:
    provider = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        *,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        completion_window: str = "24h",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        **body_options: Any,
    ):
        # hosted OpenAI rejects vLLM's top_k and repetition_penalty, and reasoning models take
        # max_completion_tokens; a vLLM batch server takes these too
        body_options.setdefault("vllm_params", False)
        body_options.setdefault("token_param", "max_completion_tokens")
        self.wire = OpenAIBackend(url, model, api_key_env=api_key_env, **body_options)
        self.url = redact(self.wire.base_url)
        self.identity = self.wire.identity  # the same model online or batched is the same teacher
        self.prefills = self.wire.prefills
        self.max_requests = min(int(max_requests), MAX_REQUESTS)
        self.max_bytes = min(int(max_bytes), MAX_BYTES)
        self.completion_window = completion_window
        key = os.environ.get(api_key_env) or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = HttpClient(self.wire.base_url, headers, name=redact(f"openai-batch:{url}#{model}"),
                               timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                               secret=key)  # fmt: skip

    def render(self, request: GenRequest) -> str:
        return self.wire.render(request)

    def line(self, request: GenRequest) -> bytes:
        entry = {
            "custom_id": request.request_id,
            "method": "POST",
            "url": _ENDPOINT,
            "body": self.wire.body(request),
        }
        return json.dumps(entry, ensure_ascii=False).encode() + b"\n"

    def submit(self, lines: list[bytes]) -> tuple[str, str | None]:
        file = self.http.upload("/files", {"purpose": "batch"}, "r1v-batch.jsonl", b"".join(lines))
        batch = self.http.json("POST", "/batches", {"input_file_id": file["id"], "endpoint": _ENDPOINT,
                                                    "completion_window": self.completion_window,
                                                    "metadata": {"created_by": "r1v"}})  # fmt: skip
        return str(batch["id"]), str(file["id"])

    def retrieve(self, batch_id: str) -> BatchInfo:
        batch = self.http.json("GET", f"/batches/{batch_id}")
        state = str(batch.get("status"))
        counts = batch.get("request_counts") or {}
        done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
        refs = {k: batch[k] for k in ("output_file_id", "error_file_id") if batch.get(k)}
        return BatchInfo(state, state in _TERMINAL, done, int(counts.get("total") or 0),
                         resubmit=_TERMINAL.get(state, True), error=_batch_errors(batch, state), refs=refs,
                         counts=json.dumps(counts, sort_keys=True))  # fmt: skip

    def results(self, batch_id: str, info: BatchInfo, prefixes: dict[str, str]) -> Iterator[GenResult | str]:
        for ref in ("output_file_id", "error_file_id"):
            if ref in info.refs:
                raw = self.http.call("GET", f"/files/{info.refs[ref]}/content")
                for line in raw.splitlines():
                    if line.strip():
                        yield self._result(json.loads(line), prefixes)

    def cancel(self, batch_id: str) -> None:
        self.http.json("POST", f"/batches/{batch_id}/cancel")

    def _result(self, entry: dict[str, Any], prefixes: dict[str, str]) -> GenResult | str:
        rid = str(entry.get("custom_id"))
        error = entry.get("error")
        if isinstance(error, dict) and error.get("code") in ("batch_expired", "batch_cancelled"):
            return rid  # never ran: no result
        response = entry.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            request = GenRequest(rid, [], Sampling(), prefixes.get(rid, ""))
            parsed = self.wire._parse(request, json.dumps(body).encode())
            if isinstance(parsed, GenResult):
                return parsed
            return GenResult(rid, finish_reason="error", error=parsed.error)
        message = _message(error, body, status)
        rejected = isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)
        return GenResult(rid, finish_reason="rejected" if rejected else "error", error=redact(message))


def _message(error: Any, body: Any, status: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"HTTP {status}: {body['error'].get('message')}"
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return f"HTTP {status}: {body_snippet(json.dumps(body).encode())}"


def _batch_errors(batch: dict[str, Any], state: str) -> str | None:
    if state != "failed":
        return None
    errors = (batch.get("errors") or {}).get("data") or []
    words = "; ".join(str(e.get("message")) for e in errors[:3] if isinstance(e, dict))
    return redact(f"batch {batch.get('id')} failed: {words or 'no reason given'}")
