"""Online backends under request and token budgets (`rpm`, `tpm`), a 429's Retry-After holding
back every request, reasoning-model parameters, and `anthropic:` on the same client."""

from __future__ import annotations

import json

import pytest
from servers.fake_openai import FakeOpenAI

from r1v_data.backends import make_backend
from r1v_data.backends.base import GenRequest, Message, Sampling
from r1v_data.backends.rate_budget import RateBudget

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "api_key_env": "R1V_TEST_NO_KEY"}


def requests(n: int, max_tokens: int = 16) -> list[GenRequest]:
    return [
        GenRequest(f"r{i}", [Message("user", f"question {i}")], Sampling(max_tokens=max_tokens))
        for i in range(n)
    ]


def starts(srv: FakeOpenAI) -> list[float]:
    return sorted(r.at for r in srv.received)


@pytest.mark.slow
def test_rpm_budget_holds_within_5_percent_over_30_seconds() -> None:
    rpm = 600  # 10 a second: 300 in the 30 s window
    with FakeOpenAI(record=True) as srv:
        backend = make_backend(f"openai:{srv.url}#fake-model", rpm=rpm, concurrency=32, **FAST)
        try:
            results = list(backend.generate(requests(330)))
        finally:
            backend.close()
        at = starts(srv)
    assert all(r.error is None for r in results)
    in_window = sum(1 for t in at if t - at[0] < 30.0)
    assert abs(in_window - rpm / 2) <= 0.05 * rpm / 2, in_window
    per_minute = (len(at) - 1) / (at[-1] - at[0]) * 60
    assert abs(per_minute - rpm) <= 0.05 * rpm, per_minute


def test_tpm_budget_paces_by_tokens() -> None:
    # each request: ~30 bytes of JSON prompt / 4 + 200 completion tokens ≈ 250; 30,000 tpm ≈ 2/s
    with FakeOpenAI() as srv:
        backend = make_backend(f"openai:{srv.url}#fake-model", tpm=30_000, **FAST)
        try:
            list(backend.generate(requests(5, max_tokens=200)))
        finally:
            backend.close()
        at = starts(srv)
    assert 1.6 <= at[-1] - at[0] <= 3.5  # four gaps of ~0.5-0.6 s


def test_retry_after_holds_back_every_request() -> None:
    with FakeOpenAI(faults={"question 0": ["429:1"]}) as srv:
        backend = make_backend(f"openai:{srv.url}#fake-model", rpm=600, concurrency=1, **FAST)
        try:
            results = list(backend.generate(requests(4)))
        finally:
            backend.close()
        at = [r.at for r in srv.received]
    assert all(r.error is None for r in results)
    assert at[1] - at[0] >= 1.0  # the retry and every later request waited for Retry-After


def test_no_budget_costs_nothing() -> None:
    with FakeOpenAI() as srv:
        backend = make_backend(f"openai:{srv.url}#fake-model", **FAST)
        assert backend.budget is None
        backend.close()
    budget = RateBudget(60, None)
    assert budget.reserve(1) == 0.0 and 0.9 < budget.reserve(1) <= 1.0


def test_reasoning_models_get_max_completion_tokens_and_effort() -> None:
    with FakeOpenAI() as srv:
        backend = make_backend(f"openai:{srv.url}#o-fake", token_param="max_completion_tokens",
                               reasoning_effort="high", **FAST)  # fmt: skip
        try:
            list(backend.generate(requests(1)))
        finally:
            backend.close()
        body = srv.bodies()[0]
    assert body["max_completion_tokens"] == 16 and body["reasoning_effort"] == "high"
    assert "max_tokens" not in body and "temperature" not in body and "top_p" not in body


def test_anthropic_online_speaks_the_messages_api() -> None:
    from aiohttp import web
    from servers.threaded import ThreadedServer

    seen: list[dict] = []

    class FakeMessages(ThreadedServer):
        port = 0

        def make_runner(self) -> web.AppRunner:
            async def messages(request: web.Request) -> web.Response:
                seen.append({"headers": dict(request.headers), "body": await request.json()})
                content = [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "\\boxed{3}"}]
                return web.json_response({"type": "message", "role": "assistant", "content": content,
                                          "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 5}})  # fmt: skip

            app = web.Application()
            app.add_routes([web.post("/v1/messages", messages)])
            return web.AppRunner(app, access_log=None, handle_signals=False)

    with FakeMessages() as srv:
        backend = make_backend(
            f"anthropic:http://127.0.0.1:{srv.port}/v1#claude-fake", thinking_budget=1024, **FAST
        )
        request = requests(1)[0]
        request.messages.insert(0, Message("system", "be brief"))
        try:
            (result,) = backend.generate([request])
        finally:
            backend.close()
    body = seen[0]["body"]
    assert seen[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert body["system"] == "be brief" and body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert [m["role"] for m in body["messages"]] == ["user"] and "temperature" not in body
    assert result.text == "<think>\nhmm\n</think>\n\n\\boxed{3}" and result.completion_tokens == 5
    assert backend.identity == "anthropic:claude-fake"
    assert json.loads(backend.render(request))["model"] == "claude-fake"
