"""The `openai:URL#MODEL` backend against a real fault-injecting HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pickle
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image
from servers.fake_openai import FakeOpenAI, digest, reply_text

from r1v_data.backends import make_backend
from r1v_data.backends.base import BackendError, GenRequest, GenResult, Message, Sampling
from r1v_data.backends.openai_compat import OpenAIBackend
from r1v_data.backends.openai_wire import image_mime

KEY_ENV = "R1V_TEST_OPENAI_KEY"  # never the user's real OPENAI_API_KEY
SECRET = "sk-test-0123456789abcdef"
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "api_key_env": KEY_ENV}


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def serve() -> Iterator:
    servers: list[FakeOpenAI] = []

    def start(**kwargs) -> FakeOpenAI:
        srv = FakeOpenAI(**kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def backends() -> Iterator:
    made: list[OpenAIBackend] = []

    def make(url: str, **kwargs) -> OpenAIBackend:
        be = OpenAIBackend(url, "fake-model", **{**FAST, **kwargs})
        made.append(be)
        return be

    yield make
    for be in made:
        be.close()


def image(fmt: str, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format=fmt)
    return buf.getvalue()


def req(rid: str, text: str | None = None, images: list[bytes] | None = None, **sampling) -> GenRequest:
    msgs = [Message("user", text or f"question {rid}", images or [])]
    return GenRequest(rid, msgs, Sampling(**sampling), "<think>\n")


def run(be: OpenAIBackend, requests) -> dict[str, GenResult]:
    out: dict[str, GenResult] = {}
    for res in be.generate(requests):
        assert res.request_id not in out, f"{res.request_id} came back twice"
        out[res.request_id] = res
    return out


# ---- request bodies ------------------------------------------------------------------------------
def test_happy_path_images_sampling_and_results(serve, backends) -> None:
    srv = serve(latency_s=0.01)
    be = backends(srv.url, concurrency=4)
    png, jpeg = image("PNG"), image("JPEG", "blue")
    sampling = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_tokens": 333, "seed": 7}
    sampling["repetition_penalty"] = 1.05
    requests = [req("img", "what is shown?", [png, jpeg], **sampling)]
    requests += [req(f"t{i}", f"text question {i}") for i in range(20)]
    results = run(be, requests)

    assert set(results) == {r.request_id for r in requests}  # every request exactly once
    assert len(srv.received) == 21 and all(r.attempt == 1 for r in srv.received)
    (body,) = srv.bodies("what is shown?")
    (content,) = [m["content"] for m in body["messages"]]
    assert [p["type"] for p in content] == ["image_url", "image_url", "text"]  # images first
    assert content[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1]) == jpeg
    assert content[2]["text"] == "what is shown?"
    assert body["model"] == "fake-model" and body["n"] == 1
    for key, value in sampling.items():
        assert body[key] == value, key
    assert "continue_final_message" not in body  # prefill is off by default
    assert [m["role"] for m in body["messages"]] == ["user"]
    text_body = srv.bodies("text question 3")[0]
    assert text_body["messages"] == [{"role": "user", "content": "text question 3"}]
    assert "top_k" not in text_body  # top_k None is left to the server
    assert "authorization" not in srv.received[0].headers  # no key set, no header

    res = results["t3"]
    assert res.error is None and res.finish_reason == "stop"
    assert res.text == reply_text(digest(text_body), continues=False)
    assert res.prompt_tokens == 3 and res.completion_tokens == len(res.text.split(" "))
    assert res.latency_s is not None and res.latency_s >= 0.01


def test_truncation_reports_length(serve, backends) -> None:
    srv = serve()
    be = backends(srv.url)
    res = run(be, [req("a", max_tokens=3)])["a"]
    assert res.finish_reason == "length" and res.completion_tokens == 3
    assert res.text == f"<think>\nDigest {digest(srv.bodies()[0])}. Reasoning"


def test_image_mime_from_magic_numbers() -> None:
    for fmt, mime in [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("WEBP", "webp")]:
        assert image_mime(image(fmt)) == f"image/{mime}"
    assert image_mime(image("BMP")) == "image/bmp"
    assert image_mime(b"not an image") == "application/octet-stream"


def test_vllm_params_off_for_hosted_apis(serve, backends) -> None:
    srv = serve()
    be = backends(srv.url, vllm_params=False, extra_body={"user": "r1v"})
    run(be, [req("a", top_k=5, repetition_penalty=1.2)])
    (body,) = srv.bodies()
    assert "top_k" not in body and "repetition_penalty" not in body
    assert body["user"] == "r1v" and body["temperature"] == 0.6


def test_prefill_continues_the_assistant_prefix(serve, backends) -> None:
    srv = serve()
    be = backends(srv.url, prefill=True)
    assert be.prefills
    results = run(be, [req("a", "prefilled question")])
    (body,) = srv.bodies()
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert results["a"].text == reply_text(digest(body), continues=True)  # no <think> again
    assert not results["a"].text.startswith("<think>")


def test_reasoning_field_is_put_back_in_think_tags(serve, backends) -> None:
    srv = serve(faults={"*": ["reasoning"]})
    be = backends(srv.url)
    results = run(be, [req("a")])
    assert results["a"].text == reply_text(digest(srv.bodies()[0]), continues=False)


def test_render_is_canonical_and_deterministic(serve) -> None:
    be = OpenAIBackend("http://127.0.0.1:9/v1/", "m")
    png = image("PNG")
    a = be.render(req("a", "same", [png]))
    assert a == be.render(req("b", "same", [png]))  # the request id is not part of it
    assert a != be.render(req("a", "same", [image("PNG", "green")]))  # the image is
    assert a != be.render(req("a", "same", [png], temperature=1.0))
    parsed = json.loads(a)
    assert a == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert parsed["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;sha256,")
    assert be.spec == "openai:http://127.0.0.1:9/v1#m"
    built = make_backend("openai:http://127.0.0.1:9/v1#m", concurrency=3)
    assert isinstance(built, OpenAIBackend) and built.concurrency == 3


SETTINGS = [
    {},
    {"prefill": False},
    {"vllm_params": False, "token_param": "max_completion_tokens"},
    {"reasoning_effort": "low", "extra_body": {"stop": ["</answer>"], "seed": 3}},
    {"extra_body": {"messages": [{"role": "user", "content": "set by the user"}]}},
]


def _anthropic(**settings) -> OpenAIBackend:
    return make_backend("anthropic:http://127.0.0.1:9/v1#m", **settings)


@pytest.mark.parametrize("make", [lambda **kw: OpenAIBackend("http://127.0.0.1:9/v1", "m", **kw), _anthropic])
@pytest.mark.parametrize("settings", SETTINGS)
def test_bodies_encoded_once_per_prompt_equal_each_body_encoded_alone(make, settings) -> None:
    """A prompt's messages are encoded once for all its samples; what is sent and rendered must be
    exactly the body encoded on its own, for every setting that shapes a body, whichever
    requests share, or stop sharing, their messages, and for each backend built on openai:."""
    if "token_param" in settings and make is _anthropic:
        settings = {k: v for k, v in settings.items() if k != "token_param"}
    be = make(**settings)
    shared = req("a", 'same \u00e9 "quoted"', [image("PNG")]).messages
    requests = [
        GenRequest(f"s{i}", shared, Sampling(seed=i, temperature=0.1 * i), "<think>\n") for i in range(3)
    ]
    requests += [req("b", "other", [image("JPEG")]), GenRequest("p", shared, Sampling(seed=9), "")]
    requests += [GenRequest("c", shared, Sampling(seed=1), "<think>\n")]  # shared again after others
    canonical = {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":")}
    sent = [b"".join(pieces) for _, pieces in be._encoded(requests)]
    for request, body in zip(requests, sent, strict=True):
        assert json.loads(body) == be.body(request)
        assert body == json.dumps(be.body(request), ensure_ascii=False).encode()
        assert be.render(request) == json.dumps(be.body(request, inline_images=False), **canonical)


def test_a_batch_for_the_client_process_carries_a_prompts_images_once() -> None:
    """n samples of a problem share its messages: the batch handed to the client process (pickled)
    holds its images' base64 once, not n times, and each body still comes out whole."""
    be = OpenAIBackend("http://127.0.0.1:9/v1", "m")
    big = Image.frombytes(
        "RGB", (256, 256), random.Random(0).randbytes(256 * 256 * 3)
    )  # noise: no compression
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    shared = req("a", "q", [buf.getvalue()]).messages
    requests = [GenRequest(f"s{i}", shared, Sampling(seed=i), "<think>\n") for i in range(16)]
    batch = list(be._encoded(requests))
    one_body = len(b"".join(batch[0][1]))
    assert one_body > 50_000
    assert len(pickle.dumps(batch)) < 1.2 * one_body  # 16 bodies' worth of images: once
    for request, (_, pieces) in zip(requests, pickle.loads(pickle.dumps(batch)), strict=True):
        assert b"".join(pieces) == json.dumps(be.body(request), ensure_ascii=False).encode()


# ---- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault", ["429", "429:0", "500", "502", "503", "badjson", "nochoices", "reset", "hang"]
)
def test_transient_fault_is_retried_then_succeeds(serve, backends, fault: str) -> None:
    srv = serve(faults={"flaky": [fault]})
    be = backends(srv.url, timeout_s=0.3, concurrency=4)
    results = run(be, [req("bad", "flaky one"), req("ok1"), req("ok2")])
    assert set(results) == {"bad", "ok1", "ok2"}
    assert all(r.error is None and r.text for r in results.values()), results
    assert srv.count("flaky") == 2  # the fault, then the retry
    assert srv.count("question ok1") == 1
    if fault == "hang":
        assert results["bad"].latency_s >= 0.3  # latency covers the retries


def test_several_faults_in_a_row(serve, backends) -> None:
    srv = serve(faults={"flaky": ["500", "badjson", "429", "503"]})
    be = backends(srv.url)
    results = run(be, [req("a", "flaky")])
    assert results["a"].error is None and srv.count("flaky") == 5


def test_client_error_fails_at_once_without_retry(serve, backends) -> None:
    srv = serve(faults={"too long": ["400:prompt is too long", "ok"]})
    be = backends(srv.url)
    results = run(be, [req("bad", "this prompt is too long"), req("good")])
    bad = results["bad"]
    assert srv.count("too long") == 1  # never retried
    assert bad.finish_reason == "rejected" and bad.text is None
    assert bad.error == "HTTP 400: prompt is too long"
    assert results["good"].error is None


def test_a_redirect_is_not_followed_and_its_target_is_named(serve, backends) -> None:
    srv = serve(faults={"moved": ["redirect:http://elsewhere:8000/v1/chat/completions"]})
    results = run(backends(srv.url), [req("a", "moved"), req("b")])
    assert srv.count("moved") == 1  # a POST is not re-sent anywhere the client was not told to go
    assert results["a"].finish_reason == "rejected"
    assert results["a"].error == (
        "HTTP 307: 'moved'; the server redirects to http://elsewhere:8000/v1/chat/completions: use that URL"
    )
    assert results["b"].error is None


def test_a_port_that_does_not_speak_http_stops_the_run_at_once(backends) -> None:
    """Another service's port (here one that greets in SSH, then waits): no retries for an hour of
    garbage, and no wait for a blank line that never comes."""
    seen: list[bytes] = []

    def greet(conn: socket.socket) -> None:
        with conn:
            seen.append(conn.recv(65536))
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            time.sleep(5)

    def serve(listener: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the listener closes when the test is done
            while True:
                greet(listener.accept()[0])

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with pytest.raises(
            BackendError, match=r"is not an HTTP server.*not an HTTP/1.x response.*check the port"
        ):
            run(backends(url, concurrency=1, timeout_s=30), [req("a"), req("b")])
    assert len(seen) == 1  # one try, no retry


@pytest.fixture
def tls(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for 127.0.0.1, and the certificate's path."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, str(cert)


def test_an_https_server_is_reached_with_its_certificate_checked(serve, backends, tls, monkeypatch) -> None:
    context, cert = tls
    srv = serve(tls=context)
    assert srv.url.startswith("https://")
    with pytest.raises(BackendError, match=r"nothing answers.*(?i:certificate)"):  # not trusted yet
        run(backends(srv.url), [req("a")])
    monkeypatch.setenv(
        "SSL_CERT_FILE", cert
    )  # trusted as a system certificate (the client process inherits it)
    results = run(backends(srv.url), [req(f"r{i}") for i in range(6)])
    assert all(r.error is None and r.text for r in results.values()) and len(results) == 6


def test_retries_exhausted_give_a_failed_result(serve, backends) -> None:
    srv = serve(faults={"down": ["503"] * 10})
    be = backends(srv.url, max_retries=2)
    results = run(be, [req("a", "always down"), req("b")])
    assert srv.count("down") == 3
    assert results["a"].finish_reason == "error"
    assert results["a"].error == "gave up after 3 tries: HTTP 503: fake 503 for attempt 3"
    assert results["b"].error is None


def test_retry_after_is_honoured(serve, backends) -> None:
    srv = serve(faults={"slow down": ["429:1"]})
    be = backends(srv.url)  # jittered backoff alone would wait at most 0.01 s
    results = run(be, [req("a", "slow down")])
    assert results["a"].error is None
    first, second = (r.at for r in srv.received)
    assert second - first >= 0.95
    assert results["a"].latency_s >= 0.95


def test_timeouts_are_retried_then_fail(serve, backends) -> None:
    srv = serve(faults={"stuck": ["hang:5"] * 5})
    be = backends(srv.url, timeout_s=0.2, max_retries=1)
    start = time.perf_counter()
    results = run(be, [req("a", "stuck")])
    assert time.perf_counter() - start < 2
    assert srv.count("stuck") == 2
    assert results["a"].error == "gave up after 2 tries: no response within 0.2s"


# ---- the API key --------------------------------------------------------------------------------
def test_api_key_is_sent_and_never_shown(serve, backends, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    srv = serve(faults={"echo": [f"400:invalid key {SECRET} for this model"]})
    be = backends(srv.url)
    results = run(be, [req("a"), req("b", "echo the key")])
    assert {r.headers["authorization"] for r in srv.received} == {f"Bearer {SECRET}"}
    assert results["a"].error is None
    assert results["b"].error == "HTTP 400: invalid key *** for this model"
    assert SECRET not in be.render(req("a")) and SECRET not in repr(be)


def test_unauthorized_is_fatal(serve, backends) -> None:
    srv = serve(faults={"*": ["401"] * 100})
    be = backends(srv.url)
    with pytest.raises(BackendError, match=KEY_ENV) as info:
        run(be, (req(f"r{i}") for i in range(50)))
    assert "is not set" in str(info.value)
    assert srv.total <= be.concurrency


def test_wrong_model_or_path_is_fatal_before_any_success(serve, backends) -> None:
    srv = serve(faults={"*": ["404:The model `nope` does not exist."] * 100})
    be = backends(srv.url)
    with pytest.raises(BackendError, match=r"does not exist.*/v1"):
        run(be, [req(f"r{i}") for i in range(5)])


def test_a_setting_every_request_rejects_is_fatal(serve, backends) -> None:
    srv = serve(faults={"*": ["400:top_k is not supported"] * 100})
    be = backends(srv.url, concurrency=4)
    with pytest.raises(BackendError, match=r"first 8 requests all failed.*top_k"):
        run(be, (req(f"r{i}") for i in range(100)))
    assert srv.total < 20


# ---- streaming, laziness, fatal startup ---------------------------------------------------------
def test_pulls_requests_lazily_with_bounded_memory(serve, backends) -> None:
    srv = serve(record=False)
    be = backends(srv.url, concurrency=8)
    pulled = 0

    def requests() -> Iterator[GenRequest]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield req(f"r{i}")

    stream = be.generate(requests())
    for seen, res in enumerate(stream, 1):
        assert res.error is None
        # at most 8 in flight and 8 more waiting in the client process, and one batch of results
        # (16 at most) received and not yet handed out: the child is topped up on receipt
        assert pulled <= seen + 2 * (2 * 8) + 1, (pulled, seen)
        if seen == 1_000:
            break
    stream.close()  # stop early: in-flight requests are cancelled, the backend stays usable
    assert pulled <= 1_000 + 2 * (2 * 8) + 1
    assert srv.total <= pulled
    assert len(run(be, [req("after")])) == 1


def test_results_stream_as_they_complete(serve, backends) -> None:
    srv = serve(faults={"slow": ["hang:0.5"]})
    be = backends(srv.url, concurrency=4)
    order = [r.request_id for r in be.generate([req("s", "slow"), req("f1"), req("f2")])]
    assert order[-1] == "s" and sorted(order) == ["f1", "f2", "s"]


def test_nothing_listening_is_fatal_and_quick(backends) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = backends(f"http://127.0.0.1:{port}/v1")
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"nothing answers at .*start the server"):
        run(be, (req(f"r{i}") for i in range(100)))
    assert time.perf_counter() - start < 2


def test_server_gone_for_good_is_fatal(serve, backends) -> None:
    srv = serve(latency_s=0.02)
    be = backends(srv.url, concurrency=2, max_retries=3)
    stream = be.generate(req(f"r{i}") for i in range(1_000))
    assert next(stream).error is None
    srv.stop()
    start = time.perf_counter()
    with pytest.raises(BackendError, match="stopped answering"):
        for _ in stream:
            pass
    assert time.perf_counter() - start < 5


def test_close_stops_the_client_thread(serve) -> None:
    srv = serve()
    before = {t.name for t in threading.enumerate()}
    be = OpenAIBackend(srv.url, "fake-model", client_process=False, **FAST)
    assert len(run(be, [req("a")])) == 1
    be.close()
    be.close()  # idempotent
    assert "r1v-openai-client" not in {t.name for t in threading.enumerate()} - before


def test_close_stops_the_client_process(serve) -> None:
    srv = serve()
    be = OpenAIBackend(srv.url, "fake-model", **FAST)
    assert len(run(be, [req("a")])) == 1
    child = be._remote._process  # the client process
    assert child.poll() is None
    be.close()
    be.close()  # idempotent
    assert child.poll() == 0  # it stopped when asked, not killed
    assert len(run(be, [req("b")])) == 1  # a closed backend starts a new client when used again
    be.close()
