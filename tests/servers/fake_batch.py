"""A fake of two providers' batch APIs on 127.0.0.1 (aiohttp.web, in a background thread), speaking
their wire formats, for tests of `openai-batch:` and `anthropic-batch:`.

OpenAI (under /v1): POST /files (multipart, purpose=batch), GET /files/{id}/content,
POST /batches, GET /batches/{id}, POST /batches/{id}/cancel.
Anthropic: POST /v1/messages/batches, GET /v1/messages/batches/{id},
POST /v1/messages/batches/{id}/cancel, GET /v1/messages/batches/{id}/results.

A batch moves one step per poll (GET): validating (OpenAI) → `progress_polls` polls in progress
(its request counts growing) → `finalizing_polls` polls finalizing (OpenAI) → ended. Faults:
    hold=True            batches stay in progress until it is set False (a test kills the client)
    expire={0, 2}        the batches created 1st and 3rd expire with half their requests done
    reject="MARKER"      requests whose text holds MARKER fail alone (HTTP 400 / errored)
Replies are `fake_openai.reply_text` (deterministic, digest of the messages) unless `reply` is given. `sent` counts how
many batches each custom_id was submitted in; `batches` keeps every batch in creation order.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from servers.fake_openai import digest, reply_text, request_text
from servers.threaded import ThreadedServer


@dataclass
class FakeBatch:
    id: str
    provider: str
    lines: list[dict[str, Any]]
    ordinal: int
    polls: int = 0
    state: str = "validating"
    cancelled: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


class FakeBatchAPI(ThreadedServer):
    name = "fake batch API"

    def __init__(self, *, progress_polls: int = 1, finalizing_polls: int = 0, expire: set[int] | None = None,
                 reject: str | None = None, hold: bool = False,
                 reply: Callable[[dict[str, Any]], str] | None = None):  # fmt: skip
        self.port = 0
        self.progress_polls, self.finalizing_polls = progress_polls, finalizing_polls
        self.expire, self.reject, self.hold = set(expire or ()), reject, hold
        self.reply = reply  # a judge stand-in: the reply text for a request body
        self.files: dict[str, bytes] = {}
        self.batches: list[FakeBatch] = []
        self.sent: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_runner(self) -> web.AppRunner:
        return _runner(self)

    def batch(self, batch_id: str) -> FakeBatch:
        return next(b for b in self.batches if b.id == batch_id)

    def create(self, provider: str, lines: list[dict[str, Any]]) -> FakeBatch:
        prefix = "batch_" if provider == "openai" else "msgbatch_"
        b = FakeBatch(f"{prefix}{len(self.batches):04d}", provider, lines, len(self.batches))
        self.batches.append(b)
        self.sent.update(line["custom_id"] for line in lines)
        return b

    def advance(self, b: FakeBatch) -> None:
        """One poll's worth of progress."""
        if b.state in ("completed", "expired", "cancelled", "ended"):
            return
        b.polls += 1
        if b.cancelled:
            return self._end(b, "cancelled", done=0)
        if self.hold or b.polls <= self.progress_polls:
            b.state = "in_progress"
        elif b.provider == "openai" and b.polls <= self.progress_polls + self.finalizing_polls:
            b.state = "finalizing"
        elif b.ordinal in self.expire:
            self._end(b, "expired", done=len(b.lines) // 2)
        else:
            self._end(b, "completed", done=len(b.lines))

    def _end(self, b: FakeBatch, state: str, done: int) -> None:
        b.state = state if b.provider == "openai" else "ended"
        for i, line in enumerate(b.lines):
            ran = i < done
            body = line["body"] if b.provider == "openai" else line["params"]
            if not ran:
                b.errors.append(_not_run(b.provider, line["custom_id"], state))
            elif self.reject and self.reject in request_text(body):
                b.errors.append(_rejected(b.provider, line["custom_id"]))
            else:
                b.results.append(_succeeded(b.provider, line["custom_id"], body, self.reply))


def _succeeded(
    provider: str, rid: str, body: dict[str, Any], reply: Callable[..., str] | None
) -> dict[str, Any]:
    messages = body.get("messages") or []
    continues = bool(messages) and messages[-1].get("role") == "assistant"
    text = reply(body) if reply else reply_text(digest(body), continues)
    words = len(text.split(" "))
    prompt = len(request_text(body).split())
    if provider == "openai":
        completion = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "model": body.get("model"),
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": text}}],
                      "usage": {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}}  # fmt: skip
        return {"id": f"batch_req_{rid}", "custom_id": rid, "error": None,
                "response": {"status_code": 200, "request_id": f"req_{rid}", "body": completion}}  # fmt: skip
    message = {"id": f"msg_{rid}", "type": "message", "role": "assistant", "model": body.get("model"),
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "usage": {"input_tokens": prompt, "output_tokens": words}}  # fmt: skip
    return {"custom_id": rid, "result": {"type": "succeeded", "message": message}}


def _rejected(provider: str, rid: str) -> dict[str, Any]:
    if provider == "openai":
        err = {"error": {"message": "fake: this request is invalid", "type": "invalid_request_error"}}
        return {"id": f"batch_req_{rid}", "custom_id": rid, "error": None,
                "response": {"status_code": 400, "request_id": f"req_{rid}", "body": err}}  # fmt: skip
    err = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "fake: this request is invalid"},
    }
    return {"custom_id": rid, "result": {"type": "errored", "error": err}}


def _not_run(provider: str, rid: str, state: str) -> dict[str, Any]:
    if provider == "openai":
        code = "batch_expired" if state == "expired" else "batch_cancelled"
        return {"id": f"batch_req_{rid}", "custom_id": rid, "response": None,
                "error": {"code": code, "message": f"This request could not be executed before the batch {state}."}}  # fmt: skip
    return {"custom_id": rid, "result": {"type": "expired" if state == "expired" else "canceled"}}


def _openai_batch(b: FakeBatch, srv: FakeBatchAPI) -> dict[str, Any]:
    done = len(b.results) + len(b.errors) if b.state in ("completed", "expired", "cancelled") else b.polls - 1
    ended = b.state in ("completed", "expired", "cancelled")
    out = {"id": b.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
           "input_file_id": f"file-in-{b.id}", "completion_window": "24h", "status": b.state,
           "output_file_id": f"file-out-{b.id}" if ended and b.results else None,
           "error_file_id": f"file-err-{b.id}" if ended and b.errors else None,
           "created_at": int(time.time()), "request_counts": {
               "total": len(b.lines), "completed": len(b.results) if ended else min(max(done, 0), len(b.lines)),
               "failed": sum(1 for e in b.errors if e.get("response")) if ended else 0}}  # fmt: skip
    if ended:
        srv.files[f"file-out-{b.id}"] = _jsonl(b.results)
        srv.files[f"file-err-{b.id}"] = _jsonl(b.errors)
    return out


def _anthropic_batch(b: FakeBatch, srv: FakeBatchAPI) -> dict[str, Any]:
    ended = b.state == "ended"
    kinds = Counter(r["result"]["type"] for r in [*b.results, *b.errors])
    counts = {"processing": 0 if ended else len(b.lines), "succeeded": kinds["succeeded"],
              "errored": kinds["errored"], "canceled": kinds["canceled"], "expired": kinds["expired"]}  # fmt: skip
    return {"id": b.id, "type": "message_batch", "processing_status": b.state if ended else "in_progress",
            "request_counts": counts, "ended_at": "2026-01-01T00:00:00Z" if ended else None,
            "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-02T00:00:00Z",
            "cancel_initiated_at": None,
            "results_url": f"{srv.root}/v1/messages/batches/{b.id}/results" if ended else None}  # fmt: skip


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _runner(srv: FakeBatchAPI) -> web.AppRunner:
    def note(request: web.Request) -> None:
        srv.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def upload(request: web.Request) -> web.Response:
        note(request)
        form = await request.post()
        if form.get("purpose") != "batch":
            return web.json_response({"error": {"message": "purpose must be batch"}}, status=400)
        file_id = f"file-in-{len(srv.files):04d}"
        srv.files[file_id] = form["file"].file.read()  # type: ignore[union-attr]
        return web.json_response({"id": file_id, "object": "file", "bytes": len(srv.files[file_id]),
                                  "purpose": "batch", "filename": form["file"].filename})  # type: ignore[union-attr]  # fmt: skip

    async def content(request: web.Request) -> web.Response:
        data = srv.files.get(request.match_info["fid"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def create(request: web.Request) -> web.Response:
        note(request)
        body = await request.json()
        data = srv.files[body["input_file_id"]]
        lines = [json.loads(x) for x in data.splitlines() if x.strip()]
        b = srv.create("openai", lines)
        b.state = "validating"
        return web.json_response(_openai_batch(b, srv))

    async def retrieve(request: web.Request) -> web.Response:
        b = srv.batch(request.match_info["bid"])
        srv.advance(b)
        return web.json_response(_openai_batch(b, srv))

    async def cancel(request: web.Request) -> web.Response:
        b = srv.batch(request.match_info["bid"])
        b.cancelled, b.state = True, "cancelling" if b.provider == "openai" else b.state
        body = _openai_batch(b, srv) if b.provider == "openai" else _anthropic_batch(b, srv)
        return web.json_response(body)

    async def a_create(request: web.Request) -> web.Response:
        note(request)
        body = await request.json()
        b = srv.create("anthropic", body["requests"])
        b.state = "in_progress"
        return web.json_response(_anthropic_batch(b, srv))

    async def a_retrieve(request: web.Request) -> web.Response:
        b = srv.batch(request.match_info["bid"])
        srv.advance(b)
        return web.json_response(_anthropic_batch(b, srv))

    async def a_results(request: web.Request) -> web.Response:
        b = srv.batch(request.match_info["bid"])
        return web.Response(body=_jsonl([*b.results, *b.errors]), content_type="application/binary")

    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.add_routes([
        web.post("/v1/files", upload), web.get("/v1/files/{fid}/content", content),
        web.post("/v1/batches", create), web.get("/v1/batches/{bid}", retrieve),
        web.post("/v1/batches/{bid}/cancel", cancel),
        web.post("/v1/messages/batches", a_create), web.get("/v1/messages/batches/{bid}", a_retrieve),
        web.post("/v1/messages/batches/{bid}/cancel", cancel),
        web.get("/v1/messages/batches/{bid}/results", a_results),
    ])  # fmt: skip
    return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
