"""A fault-injecting OpenAI-compatible chat server on 127.0.0.1 (aiohttp.web), for tests and
benchmarks of the `openai:` backend.

In-process, on its own event loop in a background thread (tests; everything it received can be
inspected directly):

    with FakeOpenAI(latency_s=0.01, faults={"req-3": ["429:1", "500"]}) as srv:
        backend = OpenAIBackend(srv.url, "fake-model")     # srv.url ends with /v1
        ...
        assert srv.count("req-3") == 3                     # 429, 500, then a reply

In a child process (benchmarks: keeps the server off the client's GIL):

    with FakeOpenAIProcess(latency_s=0.05) as srv:         # srv.url, srv.stats()
        ...
    python tests/servers/fake_openai.py --latency-ms 50    # prints "URL http://127.0.0.1:PORT/v1"

Replies are deterministic (unless `reply(body)` is given: a judge stand-in): the sha256 of the request's messages, `D`, gives
`<think>\\nDigest D. ...\\n</think>\\n\\nThe answer is \\boxed{N}.` (without the leading `<think>\\n`
when the request asks to continue a final assistant message, as vLLM does). A `max_tokens`
below the reply's word count truncates it with finish_reason "length". Token counts are words.
With `penalty_breaks=P` the server plays a small model under a repetition penalty r (the request's
`repetition_penalty`): its padding words shrink to pad_words / r^4, and above P the reply loses its
form (no `</think>`, no boxed answer), as a small model's chain turns to word salad.

Faults are scheduled per request: `faults` maps a marker (a substring of the request's text) to
the outcomes of its first attempts, in order; later attempts succeed. The key "*" applies to
requests that match no other marker. Attempts are counted per distinct request (its messages).
Outcomes:
    ok                  a normal reply
    429 / 429:S         rate limited, with `Retry-After: S` when S is given
    400, 401, 403, 404, 422, 500, 502, 503, ... / CODE:MESSAGE
                        that status with an OpenAI-style error body (holding MESSAGE if given)
    reasoning           a normal reply split into `reasoning_content` and `content`
    hang / hang:S       no answer for S seconds (default 60; the client should time out first)
    badjson             200 with a truncated JSON body
    nochoices           200 with a JSON body without `choices`
    echoauth            200 with a plain-text body echoing the request's Authorization header
    reset               the connection is closed without a response
    redirect:URL        307 to URL
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

try:
    from servers.threaded import ThreadedServer
except ImportError:  # run as a script (FakeOpenAIProcess): its own folder is on sys.path
    from threaded import ThreadedServer  # type: ignore[no-redef]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass
class Received:
    """One attempt as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    text: str  # the text parts of all messages, joined
    attempt: int  # 1 for the first time this request (its messages) was seen
    outcome: str
    at: float = field(default_factory=time.monotonic)


def request_text(body: Mapping[str, Any]) -> str:
    out = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(out)


def digest(body: Mapping[str, Any]) -> str:
    canon = json.dumps(body.get("messages"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def reply_text(d: str, continues: bool, pad_words: int = 0, answer: str | None = None) -> str:
    n = answer if answer is not None else int(d, 16) % 1000
    padding = "".join(f" w{i % 50}" for i in range(pad_words))
    think = f"Digest {d}. Reasoning about the question.{padding}\n</think>\n\n"
    return ("" if continues else "<think>\n") + think + f"The answer is \\boxed{{{n}}}."


def solver(
    key: Sequence[Mapping[str, str]], rate: float, pad_words: int = 0
) -> Callable[[dict[str, Any]], str]:
    """A teacher right on a fraction `rate` of requests, the same ones every time. `key` holds
    problems as `{"question", "image", "answer"}` (`image`: a piece of the image's base64, as
    several problems share a question); a request that holds a problem's question and image gets
    its answer when the hash of its messages and seed falls under `rate`, otherwise the digest
    reply (almost surely wrong)."""

    def reply(body: dict[str, Any]) -> str:
        d = digest(body)
        roll = int(hashlib.sha256(f"{d}:{body.get('seed')}".encode()).hexdigest()[:8], 16) / 16**8
        text, images = request_text(body), json.dumps(body.get("messages"))
        found = (p["answer"] for p in key if p["question"] in text and p.get("image", "") in images)
        answer = next(found, None) if roll < rate else None
        return reply_text(d, bool(body.get("continue_final_message")), pad_words, answer=answer)

    return reply


def penalised(text: str, penalty: float, breaks: float) -> str:
    """A repetition penalty's effect on a small model, in miniature: fewer padding words (`wN`),
    and past `breaks` a chain that never closes its think nor gives its boxed answer."""
    words = text.split(" ")
    pads = [i for i, w in enumerate(words) if re.fullmatch(r"w\d+", w)]
    keep = set(pads[: round(len(pads) / penalty**4)])
    text = " ".join(w for i, w in enumerate(words) if i not in pads or i in keep)
    return text.split("\n</think>")[0] if penalty > breaks else text


class FakeOpenAI(ThreadedServer):
    """The server on a background thread; use as a context manager or start()/stop()."""

    name = "fake OpenAI server"

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        faults: Mapping[str, Sequence[str]] | None = None,
        pad_words: int = 0,
        record: bool = True,
        port: int = 0,
        model: str = "fake-model",
        reply: Callable[[dict[str, Any]], str] | None = None,
        penalty_breaks: float | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.tls = tls
        self.latency_s = latency_s
        self.penalty_breaks = penalty_breaks
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.pad_words = pad_words
        self.record = record
        self.port = port
        self.model = model
        self.reply = reply  # a judge stand-in: the reply text for a request body, instead of the digest reply
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()  # per request: digest of messages + seed
        self.total = 0
        self.open = 0  # requests received and not yet answered: in flight, as the server sees them

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def make_runner(self) -> web.AppRunner:
        return make_runner(self)

    # ---- inspection ----------------------------------------------------------------------------
    def count(self, marker: str) -> int:
        """How many attempts the server received for requests whose text contains `marker`."""
        return sum(1 for r in self.received if marker in r.text)

    def bodies(self, marker: str = "") -> list[dict[str, Any]]:
        return [r.body for r in self.received if marker in r.text]

    def reset(self) -> None:
        self.received.clear()
        self.attempts.clear()
        self.total = 0

    # ---- the schedule --------------------------------------------------------------------------
    def outcome(self, text: str, attempt: int) -> str:
        plan = None
        for marker, steps in self.faults.items():
            if marker != "*" and marker in text:
                plan = steps
                break
        if plan is None:
            plan = self.faults.get("*")
        if plan and attempt <= len(plan):
            return plan[attempt - 1]
        return "ok"


def make_runner(state: FakeOpenAI) -> web.AppRunner:
    """The aiohttp app serving `state`'s schedule and recording into it."""

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "request body is not JSON")
        d = digest(body)
        key = f"{d}:{body.get('seed')}"  # samples of one prompt differ by seed: distinct requests
        state.attempts[key] += 1
        state.total += 1
        attempt = state.attempts[key]
        text = request_text(body) if (state.faults or state.record) else ""
        outcome = state.outcome(text, attempt) if state.faults else "ok"
        if state.record:
            headers = {k.lower(): v for k, v in request.headers.items()}
            state.received.append(Received(body, headers, text, attempt, outcome))
        state.open += 1
        try:
            if state.latency_s:
                await asyncio.sleep(state.latency_s)
            return await _respond(request, state, body, d, outcome, attempt)
        finally:
            state.open -= 1

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": state.model}]})

    async def stats(request: web.Request) -> web.Response:
        resent = sum(n - 1 for n in state.attempts.values())
        return web.json_response(
            {"total": state.total, "distinct": len(state.attempts), "resent": resent, "open": state.open}
        )

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/chat/completions", chat),
            web.post("/chat/completions", chat),
            web.get("/v1/models", models),
            web.get("/stats", stats),
            web.post("/reset", reset),
        ]
    )
    # handler_cancellation: a hung handler ends when its client gives up
    return web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=0.2, handler_cancellation=True
    )


async def _respond(
    request: web.Request,
    state: FakeOpenAI,
    body: dict[str, Any],
    d: str,
    outcome: str,
    attempt: int,
) -> web.StreamResponse:
    kind, _, arg = outcome.partition(":")
    if kind == "hang":
        await asyncio.sleep(float(arg or 60))
        kind = "ok"
    if kind == "ok":
        return _completion(state, body, d)
    if kind == "badjson":
        return web.Response(body=b'{"id": "chatcmpl-x", "choices": [{"mess', content_type="application/json")
    if kind == "echoauth":  # a misconfigured proxy's debug page
        auth = request.headers.get("Authorization", "(none)")
        return web.Response(text=f"debug: Authorization: {auth}", content_type="text/plain")
    if kind == "nochoices":
        return web.json_response(
            {"id": "chatcmpl-x", "object": "chat.completion", "model": body.get("model")}
        )
    if kind == "reset":
        assert request.transport is not None
        request.transport.close()  # the client sees the connection drop, no response
        return web.Response(status=500)
    if kind == "reasoning":
        return _completion(state, body, d, split_reasoning=True)
    if kind == "redirect":  # a load balancer pointing elsewhere
        return web.Response(status=307, headers={"Location": arg}, text="moved")
    status = int(kind)
    if status == 429:
        headers = {"Retry-After": arg} if arg else None
        return _error(status, f"fake 429 for attempt {attempt}", headers)
    return _error(status, arg or f"fake {status} for attempt {attempt}")


def _completion(
    state: FakeOpenAI, body: dict[str, Any], d: str, split_reasoning: bool = False
) -> web.Response:
    continues = bool(body.get("continue_final_message"))
    text = state.reply(body) if state.reply else reply_text(d, continues, state.pad_words)
    if state.penalty_breaks is not None:
        text = penalised(text, float(body.get("repetition_penalty") or 1.0), state.penalty_breaks)
    words = text.split(" ")
    finish = "stop"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and len(words) > max_tokens:
        text, finish = " ".join(words[:max_tokens]), "length"
        words = words[:max_tokens]
    message = {"role": "assistant", "content": text}
    if split_reasoning:  # as vLLM's reasoning parsers return it
        think, _, answer = text.removeprefix("<think>\n").partition("\n</think>\n\n")
        message = {"role": "assistant", "content": answer, "reasoning_content": think}
    prompt_tokens = len(request_text(body).split())
    return web.json_response(
        {
            "id": f"chatcmpl-{d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", state.model),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": message,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            },
        }
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    err = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": status}
    return web.json_response({"error": err}, status=status, headers=headers)


class FakeOpenAIProcess:
    """The same server in a child process, stopped by its PID; `stats()` asks it over HTTP."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        faults: Mapping[str, Sequence[str]] | None = None,
        pad_words: int = 0,
        python: str | None = None,
        answers: Path | None = None,
        solve_rate: float = 0.0,
        penalty_breaks: float | None = None,
    ):
        self.args = [
            python or sys.executable,
            os.path.abspath(__file__),
            "--latency-ms",
            str(latency_s * 1000),
            "--pad-words",
            str(pad_words),
            "--faults",
            json.dumps(dict(faults or {})),
            *(("--answers", str(answers), "--solve-rate", str(solve_rate)) if answers else ()),
            *(("--penalty-breaks", str(penalty_breaks)) if penalty_breaks is not None else ()),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> FakeOpenAIProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints its URL once it listens
        if not line.startswith("URL "):
            self.__exit__()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        self.url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, Any]:
        root = self.url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(root + "/stats", timeout=5) as r:
            return json.load(r)

    def reset(self) -> None:
        root = self.url.rsplit("/v1", 1)[0]
        req = urllib.request.Request(root + "/reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description="fault-injecting OpenAI-compatible test server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--pad-words", type=int, default=0)
    ap.add_argument("--faults", default="{}", help='JSON, e.g. {"*": ["429:1", "500"]}')
    ap.add_argument(
        "--answers", type=Path, help="JSON [{question, image, answer}] for a teacher that solves some"
    )
    ap.add_argument("--solve-rate", type=float, default=0.0)
    ap.add_argument("--penalty-breaks", type=float, help="play a small model under a repetition penalty")
    a = ap.parse_args()
    srv = FakeOpenAI(
        latency_s=a.latency_ms / 1000,
        faults=json.loads(a.faults),
        pad_words=a.pad_words,
        record=False,
        port=a.port,
        reply=solver(json.loads(a.answers.read_text()), a.solve_rate, a.pad_words) if a.answers else None,
        penalty_breaks=a.penalty_breaks,
    )

    async def serve() -> None:
        runner = make_runner(srv)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", srv.port, backlog=1024)
        await site.start()
        srv.port = runner.addresses[0][1]
        print(f"URL {srv.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
