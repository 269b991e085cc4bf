"""`openai:URL#MODEL` — any OpenAI-compatible chat server (vLLM serve, SGLang, llama.cpp,
hosted APIs), called from a private event loop in a process of its own (`client_process.py`;
`client_process=False` runs the loop in a thread of this process).

The HTTP client is r1v's own lean HTTP/1.1 client for plain-HTTP servers (`http1.py`: about half
of aiohttp's CPU a request) and aiohttp for https:// ones (`http_aiohttp.py`). aiohttp was the
fastest library measured against a 50 ms server at 64 requests in flight (1,093 req/s, against
490 for `openai.AsyncOpenAI` and 106 for httpx 0.28; see the anchors README §4), hence no `openai`
or `httpx` dependency. Redirects are not followed: a 3xx fails the request and names its target.

How a request is sent
    POST {URL}/chat/completions with one completion per request (`n: 1`; the caller fans out).
    Images go first in the user turn as `image_url` parts holding data URLs whose mime type is
    read from the bytes' magic numbers. Sampling maps to temperature, top_p, max_tokens and
    seed; with `vllm_params=True` (the default) top_k and repetition_penalty are sent too, as
    vLLM and SGLang accept them. Hosted APIs (OpenAI itself) reject those two with a 400: pass
    `vllm_params=False` there (a warning is logged once if the sampling then asks for them).
    With `prefill=True` the assistant prefix (`<think>\\n`) is sent as a final assistant message
    with vLLM's `continue_final_message: true, add_generation_prompt: false`, so the model
    continues it; otherwise the prefix is not sent at all. `extra_body` is merged into every body.
    Reasoning models: `token_param="max_completion_tokens"` names the completion limit as OpenAI's
    reasoning models want it, and `reasoning_effort` (low | medium | high) is sent instead of
    temperature and top_p, which those models reject.

Budgets
    `rpm` and `tpm` (requests and tokens per minute) pace requests before they are sent
    (`rate_budget.py`); a 429's Retry-After then holds back every request, not just its own.

Streaming and memory
    `generate()` pulls requests from its iterable lazily, in the caller's thread (the iterable
    may touch the caller's state), encodes their bodies there, and keeps at most `concurrency`
    in flight (and as many more handed to the client process); results come back as they
    complete, in any order.

Retries (exponential backoff with full jitter, at most `max_retries` re-sends)
    Only transient failures are retried: HTTP 408, 429 (waiting at least its Retry-After, in
    seconds or as an HTTP date), 5xx, connection errors, timeouts, and malformed bodies (not
    JSON, no `choices`, no `message`). Any other 4xx fails the request at once with the
    server's message. A request that fails for good becomes a `GenResult` with `error` and
    `finish_reason="error"`; it never raises.

When the backend gives up as a whole (`BackendError`)
    - HTTP 401 or 403: the key is missing or wrong; no other request can succeed.
    - No connection can be opened (refused, DNS, TLS) before the server has ever answered:
      nothing is listening at the URL. Raised on the first attempt, without retries.
    - What answers at the URL before any HTTP response is not HTTP (the port of another service).
    - The server answered before but still cannot be reached after `max_retries` backoffs.
    - HTTP 404 before any request has succeeded: the URL (missing `/v1`?) or model is wrong.
    - The first 8 results all fail with the same non-transient error and nothing succeeded in
      between: a setting every request shares is rejected (e.g. `top_k` on a hosted API).
    Requests still in flight are cancelled; rows already yielded stay valid.

The API key is read from the environment variable `api_key_env` (default OPENAI_API_KEY) when the
backend is built; without one no Authorization header is sent. The key never appears in
`render()`, in error messages or in `repr()`: every error a result keeps passes `r1v_data.redact`
(the key itself, and any credential a server echoes or the URL's userinfo holds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from r1v_data.backends.base import BackendError, GenRequest, GenResult
from r1v_data.backends.client_process import ClientProcess, Pending
from r1v_data.backends.endpoints import Endpoints
from r1v_data.backends.http1 import BadResponse, CannotConnect, Http1Client, HttpError
from r1v_data.backends.http_aiohttp import AiohttpClient
from r1v_data.backends.openai_wire import (
    body_snippet,
    content_text,
    exception_reason,
    image_url,
    int_or_none,
    parse_retry_after,
    server_message,
)
from r1v_data.backends.rate_budget import RateBudget, estimate_tokens
from r1v_data.processes import pipe_streams, read_message, write_message
from r1v_data.redact import redact

# where the messages go while the rest of a body is encoded (`_body_pieces`): a string no body holds
_MESSAGES_MARK = "\x00r1v:messages\x00"
_MESSAGES_MARK_JSON = json.dumps(_MESSAGES_MARK)
# a body as sent (inline images), and as rendered (canonical: what request ids hash); made once,
# as `json.dumps` with options builds an encoder on every call
_JSON: dict[bool, json.JSONEncoder] = {
    True: json.JSONEncoder(ensure_ascii=False),
    False: json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")),
}

log = logging.getLogger(__name__)


def encode_json(body: dict[str, Any], inline_images: bool) -> str:
    """A body as sent (`inline_images`) or as rendered (canonical JSON)."""
    return _JSON[inline_images].encode(body)


_TRANSIENT_STATUS = frozenset({408, 429})  # besides every 5xx
_SAME_ERROR_FATAL = 8  # this many identical non-transient failures before any success → fatal


class _Fatal(Exception):
    """Raised inside the loop when the backend cannot work at all."""


@dataclass
class _Attempt:
    """How one try ended when it did not produce a result."""

    error: str
    transient: bool
    retry_after: float | None = None
    unreachable: bool = False  # no connection could be opened


class OpenAIBackend:
    supports_images = True

    def __init__(
        self,
        spec_url: str,
        model: str,
        *,
        concurrency: int = 64,
        timeout_s: float = 600,
        max_retries: int = 6,
        api_key_env: str = "OPENAI_API_KEY",
        prefill: bool = False,
        extra_body: dict[str, Any] | None = None,
        vllm_params: bool = True,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        spec: str | None = None,
        token_param: str = "max_tokens",
        reasoning_effort: str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        client_process: bool = True,
    ):
        if concurrency < 1:
            raise BackendError(f"openai backend: concurrency must be at least 1, not {concurrency}")
        self.endpoints = Endpoints(spec_url)  # URL1,URL2,...: servers of one model, balanced here
        for url in [e.base_url for e in self.endpoints.all] or [spec_url]:
            if not url.startswith(("http://", "https://")):
                raise BackendError(
                    f"openai backend: {url!r} is not an http(s) URL; write openai:http://HOST:PORT/v1#MODEL "
                    "(or several URLs joined by commas)"
                )
        self.base_url = ",".join(e.base_url for e in self.endpoints.all)
        self.model = model
        self.spec = spec or f"openai:{self.base_url}#{model}"
        self.identity = f"openai:{model}"  # where it is served from does not change the teacher
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.prefill = bool(prefill)
        self.prefills = self.prefill
        self.extra_body = dict(extra_body or {})
        self.vllm_params = bool(vllm_params)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        if token_param not in ("max_tokens", "max_completion_tokens"):
            raise BackendError(
                f"openai backend: token_param is max_tokens or max_completion_tokens, not {token_param!r}"
            )
        self.token_param = token_param
        self.reasoning_effort = reasoning_effort
        self.budget = RateBudget.make(rpm, tpm)
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        self._headers = {"Content-Type": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._warned_dropped = False
        # inline_images -> (the messages object last encoded, its assistant prefix, their JSON)
        self._messages_json: dict[bool, tuple[list[Any], str, str]] = {}
        # loop-thread state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._answered = False  # the server has sent at least one HTTP response
        self._succeeded = False  # at least one request produced a completion
        self._early_failures: list[str] = []  # non-transient failures before the first success
        self._lock = threading.Lock()
        # the client loop runs in a process of its own (client_process.py) unless told otherwise
        self.client_process = bool(client_process)
        self._remote: ClientProcess | None = None

    def __getstate__(self) -> dict[str, Any]:
        # what the client process is sent: the settings, none of this process's running state
        state = self.__dict__.copy()
        state.update(_loop=None, _thread=None, _session=None, _lock=None, _remote=None, _messages_json={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIBackend({redact(self.spec)!r}, concurrency={self.concurrency})"

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- request bodies ----------------------------------------------------------------------
    def body(self, request: GenRequest, *, inline_images: bool = True) -> dict[str, Any]:
        """The JSON body sent for `request`. With `inline_images=False` each image's payload is
        replaced by its sha256 (what `render` shows)."""
        return self._body(request, self._messages(request, inline_images))

    def _messages(self, request: GenRequest, inline_images: bool) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            if not m.images:
                messages.append({"role": m.role, "content": m.text})
                continue
            parts: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": image_url(img, inline_images)}} for img in m.images
            ]
            parts.append({"type": "text", "text": m.text})
            messages.append({"role": m.role, "content": parts})
        if self.prefill and request.assistant_prefix:
            messages.append({"role": "assistant", "content": request.assistant_prefix})
        return messages

    def _body(self, request: GenRequest, messages: Any) -> dict[str, Any]:
        """The body around `messages` (the sampling settings, the model, what the server needs)."""
        s = request.sampling
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": 1}
        if self.reasoning_effort:  # reasoning models reject temperature and top_p
            body["reasoning_effort"] = self.reasoning_effort
        else:
            body.update(temperature=s.temperature, top_p=s.top_p)
        body[self.token_param] = s.max_tokens
        if s.seed is not None:
            body["seed"] = s.seed
        if self.vllm_params:
            if s.top_k is not None:
                body["top_k"] = s.top_k
            body["repetition_penalty"] = s.repetition_penalty
        elif (s.top_k is not None or s.repetition_penalty != 1.0) and not self._warned_dropped:
            self._warned_dropped = True
            log.warning(
                "%s: vllm_params=False, so top_k=%s and repetition_penalty=%s are not sent",
                redact(self.spec),
                s.top_k,
                s.repetition_penalty,
            )
        if self.prefill and request.assistant_prefix:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra_body)
        return body

    def render(self, request: GenRequest) -> str:
        """The request body as canonical JSON (sorted keys, no whitespace), without the API key.

        Image payloads appear as `data:<mime>;sha256,<hex>`: the digest pins the exact bytes
        (so the request identity changes with the image) without copying megabytes of base64
        into every trace row's prompt.
        """
        return "".join(self._body_pieces(request, inline_images=False))

    def _body_pieces(self, request: GenRequest, inline_images: bool) -> tuple[str, str, str]:
        """`body` as JSON (canonical without inline images) in three pieces: before the messages,
        the messages, after them. The messages are encoded once for all the requests that share
        them (the same string object): a problem's n samples differ only in their sampling
        settings, and encoding its images' base64 again for each was most of the driver's time."""
        encoder = _JSON[inline_images]
        body = self._body(request, _MESSAGES_MARK)
        if body.get("messages") is not _MESSAGES_MARK:  # extra_body replaced the messages
            return encode_json(self.body(request, inline_images=inline_images), inline_images), "", ""
        cached = self._messages_json.get(inline_images)
        if cached is None or cached[0] is not request.messages or cached[1] != request.assistant_prefix:
            encoded = encoder.encode(self._messages(request, inline_images))
            cached = self._messages_json[inline_images] = (
                request.messages,
                request.assistant_prefix,
                encoded,
            )
        head, _, tail = encoder.encode(body).partition(_MESSAGES_MARK_JSON)
        return head, cached[2], tail

    # ---- the sync facade ---------------------------------------------------------------------
    def start_client(self) -> None:
        """Start the client process now, so it imports while the caller prepares its requests
        (otherwise the first `generate` starts it)."""
        if self.client_process:
            self._client().start()

    def generate(self, requests: Iterable[GenRequest]) -> Iterator[GenResult]:
        encoded = self._encoded(requests)
        if not self.client_process:
            return self._generate_here(encoded)
        return self._client().generate(encoded, proven=self._succeeded)

    def _client(self) -> ClientProcess:
        if self._remote is None:
            self._remote = ClientProcess(self)
        return self._remote

    def _encoded(self, requests: Iterable[GenRequest]) -> Iterator[tuple[_Sent, _Pieces]]:
        """Each request with its body as sent, in pieces (`_Run.spawn` joins them): of the request,
        only what the client reads (its messages, images included, are in the body; a tuple
        pickles in a tenth of the time). The requests of a prompt share one bytes object for its
        messages, so a batch handed to the client process carries them once (pickle writes an
        object it meets again as a reference): with n samples of a problem with images, not n
        copies of the images' base64."""
        shared: tuple[str, bytes] = ("", b"")
        for req in requests:
            sent = _Sent(req.request_id, req.assistant_prefix, req.sampling.max_tokens)
            head, messages, tail = self._body_pieces(req, inline_images=True)
            if messages is not shared[0]:
                shared = (messages, messages.encode())
            yield sent, (head.encode(), shared[1], tail.encode())

    async def serve(self, conn: Connection) -> None:
        """The client process's side (`ClientProcess`), on this thread's event loop: send the
        requests the driver hands over, `concurrency` at a time, and hand back the results, those
        finished in one turn of the loop in one message, until the driver says stop or goes away."""
        reader, writer = await pipe_streams(conn)
        self._session = self._new_session()
        run = _Run(self, _Outbox(writer), slots=self.concurrency)
        try:
            while (msg := await read_message(reader)) is not None:
                kind, value = msg
                if kind == "requests":
                    run.spawn(value)
                elif value:  # "proven"
                    self.settings_proven()
        except (EOFError, OSError):
            pass  # the driver is gone
        finally:
            run.cancel()
            await asyncio.gather(*run.tasks, return_exceptions=True)
            await self._session.close()
            writer.close()

    def _generate_here(self, encoded: Iterator[tuple[_Sent, _Pieces]]) -> Iterator[GenResult]:
        """The client loop in a thread of this process."""
        loop = self._start()
        results: queue.SimpleQueue[GenResult | BackendError] = queue.SimpleQueue()
        run = _Run(self, results)
        pending = Pending(encoded, lambda batch: loop.call_soon_threadsafe(run.spawn, batch))
        try:
            while True:
                pending.top_up(self.concurrency)
                if not pending.outstanding:
                    return
                # every result that is already back, taken in one go: the freed slots are then
                # refilled by one wake-up of the loop instead of one per result (each wake-up and
                # each blocking get hands the GIL over, which slowed the loop under load)
                for item in self._results_ready(results):
                    pending.outstanding -= 1
                    if isinstance(item, BackendError):
                        raise item
                    yield item
        finally:
            if pending.outstanding and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(run.cancel)

    def _results_ready(
        self, results: queue.SimpleQueue[GenResult | BackendError]
    ) -> list[GenResult | BackendError]:
        ready = [self._next_result(results)]
        while len(ready) < self.concurrency:
            try:
                ready.append(results.get_nowait())
            except queue.Empty:
                break
        return ready

    def _next_result(self, results: queue.SimpleQueue[GenResult | BackendError]) -> GenResult | BackendError:
        while True:
            try:
                return results.get(timeout=1.0)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    raise BackendError(f"{self.spec}: the client thread stopped") from None

    def close(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if loop.is_running():

            async def shutdown() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if self._session is not None:
                    await self._session.close()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
            except Exception as exc:  # closing must not hide the caller's own error
                log.debug("closing %s: %s", self.spec, exc)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._session = None

    # ---- the loop thread ---------------------------------------------------------------------
    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=main, name="r1v-openai-client", daemon=True)
            thread.start()
            ready.wait()

            async def make_session() -> Any:
                return self._new_session()

            self._session = asyncio.run_coroutine_threadsafe(make_session(), loop).result()
            self._loop, self._thread = loop, thread
            return loop

    def _new_session(self) -> Http1Client | AiohttpClient:
        """The HTTP client: the lean one for plain-HTTP servers, aiohttp where one is https://
        (`http_aiohttp.py` says why)."""
        secure = any(e.base_url.startswith("https://") for e in self.endpoints.all)
        make = AiohttpClient if secure else Http1Client
        return make(self._headers, limit=self.concurrency, connect_timeout_s=min(self.timeout_s, 30.0))

    async def _request(self, req: _Sent, payload: bytes) -> GenResult:
        """Send one request with retries; a `GenResult` always, or `_Fatal`."""
        start = time.perf_counter()
        last: _Attempt | None = None
        for attempt in range(self.max_retries + 1):
            if last is not None:
                await asyncio.sleep(self._delay(attempt, last))
            if self.budget is not None:
                await asyncio.sleep(self.budget.reserve(estimate_tokens(len(payload), req.max_tokens)))
            outcome = await self._attempt(req, payload)
            if isinstance(outcome, GenResult):
                outcome.latency_s = time.perf_counter() - start
                self._succeeded = True
                return outcome
            # every error a trace row keeps passes here: a reply may echo the key (issue 14)
            last = replace(outcome, error=self._scrub(outcome.error))
            if not last.transient:
                self._note_failure(last.error)
                return _failed(req, last.error, start, "rejected")
        assert last is not None
        tries = self.max_retries + 1
        if last.unreachable:
            raise _Fatal(
                f"{self.spec}: the server stopped answering ({last.error}) and was still "
                f"unreachable after {tries} tries; restart it and re-run (finished requests "
                "are kept)"
            )
        return _failed(req, f"gave up after {tries} tries: {last.error}", start)

    async def _attempt(self, req: _Sent, payload: bytes) -> GenResult | _Attempt:
        endpoint, unreachable = self.endpoints.acquire(), False
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._session.post(endpoint.chat_url, payload)
        except TimeoutError:
            return _Attempt(f"no response within {self.timeout_s:g}s", transient=True)
        except CannotConnect as exc:
            unreachable = True
            error = self._scrub(f"cannot connect to {endpoint.base_url}: {exception_reason(exc)}")
            if not self._answered and len(self.endpoints) == 1:  # one of several: the others may answer
                raise _Fatal(
                    f"{self.spec}: nothing answers at {self.base_url} ({exception_reason(exc)}); start "
                    "the server or fix the URL in openai:URL#MODEL"
                ) from None
            return _Attempt(error, transient=True, unreachable=True)
        except HttpError as exc:  # disconnected, resets, not HTTP
            if isinstance(exc, BadResponse) and not self._answered:  # a port of something else
                raise _Fatal(
                    f"{self.spec}: what answers at {endpoint.base_url} is not an HTTP server ({exc}); "
                    "check the port in openai:URL#MODEL"
                ) from None
            return _Attempt(self._scrub(f"{type(exc).__name__}: {exception_reason(exc)}"), transient=True)
        finally:
            self.endpoints.release(endpoint, unreachable=unreachable)
        self._answered = True
        status, raw, retry_after = response.status, response.body, response.headers.get("retry-after")
        if status == 200:
            return self._parse(req, raw)
        message = self._scrub(f"HTTP {status}: {server_message(raw)}")
        if 300 <= status < 400 and "location" in response.headers:  # redirects are not followed
            message += self._scrub(f"; the server redirects to {response.headers['location']}: use that URL")
        if status in (401, 403):
            raise _Fatal(
                f"{self.spec}: the server refused the API key ({message}); set "
                f"{self.api_key_env} to a valid key"
                + ("" if self._api_key else f" ({self.api_key_env} is not set)")
            )
        if status == 404 and not self._succeeded:
            raise _Fatal(
                f"{self.spec}: {message}; check that the URL ends with the API root (often "
                "/v1) and that the server serves the model named after '#'"
            )
        if status in _TRANSIENT_STATUS or status >= 500:
            wait = parse_retry_after(retry_after)
            if wait is not None and self.budget is not None:
                self.budget.pause(wait)  # the server's limit is shared: every request waits
            return _Attempt(message, transient=True, retry_after=wait)
        return _Attempt(message, transient=False)

    def _parse(self, req: _Sent, raw: bytes) -> GenResult | _Attempt:
        try:
            data = json.loads(raw)
        except ValueError:
            return _Attempt(f"malformed response (not JSON): {body_snippet(raw)}", transient=True)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return _Attempt(f"malformed response (no choices): {body_snippet(raw)}", transient=True)
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            return _Attempt(f"malformed response (no message): {body_snippet(raw)}", transient=True)
        text = content_text(message.get("content"))
        # Servers running a reasoning parser split the thinking off; put it back in R1 form.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            opener = "" if self.prefill and req.assistant_prefix else "<think>\n"
            text = f"{opener}{reasoning}\n</think>\n\n{text}"
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return GenResult(
            req.request_id,
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int_or_none(usage.get("prompt_tokens")),
            completion_tokens=int_or_none(usage.get("completion_tokens")),
        )

    def _delay(self, attempt: int, last: _Attempt) -> float:
        """Full jitter: uniform in [0, min(max, base·2^(attempt-1))]; at least Retry-After."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(0, cap)
        if last.retry_after is not None:
            delay = max(delay, last.retry_after * (1 + 0.1 * random.random()))
        return delay

    def settings_proven(self) -> None:
        """This teacher has answered with these settings before (its traces are in the store): a
        run of identical rejections is then about those requests, not a setting they all share,
        and must not stop the others."""
        self._succeeded = True

    def _note_failure(self, error: str) -> None:
        if self._succeeded or len(self._early_failures) >= _SAME_ERROR_FATAL:
            return
        self._early_failures.append(error)
        early = self._early_failures
        if len(early) == _SAME_ERROR_FATAL and len(set(early)) == 1:
            raise _Fatal(
                f"{self.spec}: the first {_SAME_ERROR_FATAL} requests all failed with {error}; "
                "fix the setting the server rejects (for a hosted API try vllm_params=False)"
            )

    def _scrub(self, text: str) -> str:
        return redact(text, self._api_key)


_Pieces = tuple[bytes, bytes, bytes]  # a body as sent: before the messages, the messages, after them


class _Sent(NamedTuple):
    """What the client reads of a request whose body is encoded."""

    request_id: str
    assistant_prefix: str
    max_tokens: int | None


class _Run:
    """The loop-side half of one `generate()` call (or of a client process): its tasks and where
    their results go (a queue the caller's thread reads, or the client process's `_Outbox`). With `slots`, at most that many requests are in flight and the rest wait here
    (the client process is handed more than it may send at once); without, the caller bounds
    what it hands over."""

    def __init__(
        self,
        backend: OpenAIBackend,
        results: queue.SimpleQueue[GenResult | BackendError] | _Outbox,
        slots: int | None = None,
    ):
        self.backend = backend
        self.results = results
        self.slots = slots
        self.waiting: deque[tuple[_Sent, bytes]] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False

    def spawn(self, batch: list[tuple[_Sent, _Pieces]]) -> None:
        if self.stopped:
            return
        self.waiting.extend((sent, b"".join(pieces)) for sent, pieces in batch)
        self._fill()

    def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting and (self.slots is None or len(self.tasks) < self.slots):
            task = loop.create_task(self._one(*self.waiting.popleft()))
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.stopped:
            self._fill()

    async def _one(self, req: _Sent, payload: bytes) -> None:
        try:
            result: GenResult | BackendError = await self.backend._request(req, payload)
        except _Fatal as exc:
            result = BackendError(self.backend._scrub(str(exc)))
            self.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not lose the request
            msg = self.backend._scrub(f"internal error: {type(exc).__name__}: {exc}")
            result = GenResult(req.request_id, finish_reason="error", error=msg)
        if not self.stopped or isinstance(result, BackendError):
            self.results.put(result)

    def cancel(self) -> None:
        self.stopped = True
        self.waiting.clear()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()


class _Outbox:
    """Results on their way back to the driver from the client process: those finished in one
    turn of the loop go in one message, written as the socket takes it."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.items: list[GenResult | BackendError] = []

    def put(self, item: GenResult | BackendError) -> None:
        if not self.items:
            asyncio.get_running_loop().call_soon(self._flush)
        self.items.append(item)

    def _flush(self) -> None:
        items, self.items = self.items, []
        if not self.writer.is_closing():
            write_message(self.writer, items)


def _failed(req: _Sent, error: str, start: float, reason: str = "error") -> GenResult:
    return GenResult(req.request_id, finish_reason=reason, error=error, latency_s=time.perf_counter() - start)
