"""`openai:URL1,URL2,...#MODEL`: several servers of one model, balanced by the client; one that
does not answer is passed over while the others carry the run."""

from __future__ import annotations

import socket

from servers.fake_openai import FakeOpenAI

from r1v_data.backends import make_backend
from r1v_data.backends.base import GenRequest, Message, Sampling
from r1v_data.backends.endpoints import Endpoints

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requests(n: int) -> list[GenRequest]:
    return [GenRequest(f"r{i}", [Message("user", f"question {i}")], Sampling()) for i in range(n)]


def test_requests_spread_over_every_endpoint_and_skip_a_dead_one() -> None:
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with FakeOpenAI(latency_s=0.02) as a, FakeOpenAI(latency_s=0.02) as b:
        backend = make_backend(f"openai:{a.url},{dead},{b.url}#m", concurrency=8, **FAST)
        try:
            results = list(backend.generate(_requests(60)))
        finally:
            backend.close()
        served = (len(a.received), len(b.received))
    assert len(results) == 60 and all(r.error is None for r in results)
    assert sum(served) == 60 and min(served) >= 20, served  # balanced, none lost to the dead one
    assert backend.identity == "openai:m"  # where the model is served from is not the teacher


def test_the_least_busy_endpoint_is_chosen_and_ties_take_turns() -> None:
    eps = Endpoints("http://a/v1, http://b/v1/")
    first, second = eps.acquire(), eps.acquire()
    assert {first.base_url, second.base_url} == {"http://a/v1", "http://b/v1"}
    eps.release(first)
    assert eps.acquire() is first  # the other one is still busy
    eps.release(second, unreachable=True)
    eps.release(first)
    assert [eps.acquire() for _ in range(3)] == [first] * 3  # the other is down for a while
