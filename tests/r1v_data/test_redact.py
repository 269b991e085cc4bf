"""`redact`: every shape of credential r1v may meet in an error, a URL or a config, and the ordinary
text it must leave alone."""

from __future__ import annotations

import pytest

from r1v_data.redact import redact, redact_value

SECRET = "Q7" + "x9Lm" * 6  # no known shape: only found by value


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"401: got Authorization: Bearer {SECRET}", SECRET),
        (f"authorization: bearer {SECRET}", SECRET),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("invalid key sk-0123456789abcdefghij", "sk-0123456789abcdefghij"),
        ("key sk-proj-AbCdEfGhIjKlMnOpQrSt_uv", "AbCdEfGhIjKlMnOpQrSt"),
        ("x-api-key sk-ant-api03-AbCdEfGhIjKlMnOpQrSt", "AbCdEfGhIjKlMnOpQrSt"),
        ("token hf_AbCdEfGhIjKlMnOpQrStUvWxYz", "hf_AbCdEfGhIjKlMnOpQrSt"),
        (f"openai:http://me:{SECRET}@host:8000/v1#m", SECRET),
        (f"https://user:p@ss{SECRET}@host/v1", SECRET),
        (f"https://{SECRET}@github.com/org/repo", SECRET),
        (f"GET https://host/v1?api_key={SECRET}&x=1", SECRET),
        (f"https://host/data?token={SECRET}", SECRET),
        (f"https://host/blob?sig={SECRET}", SECRET),
        (f"https://host/maps?key={SECRET}", SECRET),
        (f"client_secret={SECRET}&grant=x", SECRET),
    ],
)
def test_each_credential_shape_is_masked(text: str, hidden: str) -> None:
    assert hidden not in redact(text) and "***" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "basic arithmetic over 5 classes",
        "max_tokens=512 top_k=20",
        "--set: expected KEY=VALUE, e.g. --set max_pixels=1000000",
        "task-0123456789abcdef0123456789 failed",
        "http://127.0.0.1:8000/v1#model",
        "HTTP 500: Bearer of bad news",
        "sample 8f3a9c0d1e2b4a5f6e7d8c9b0a1f2e3d",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_key_environment_values_and_given_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", SECRET)
    monkeypatch.setenv("R1V_DEBUG_KEY", "1")  # too short to be a secret: "1" stays readable
    assert redact(f"echo {SECRET} 1") == "echo *** 1"
    assert redact("their custom cred plain-words-here", "plain-words-here") == "their custom cred ***"


def test_values_are_redacted_through_containers_keys_and_secret_fields() -> None:
    value = {
        "teacher": f"openai:http://me:{SECRET}@h/v1#m",
        "teacher_options": {"api_key": "short", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
        "failed": {f"HTTP 400: key sk-{SECRET}": 3},
        "list": [f"Bearer {SECRET}", 1.5, None],
    }
    out = redact_value(value)
    assert SECRET not in repr(out) and out["teacher_options"] == {
        "api_key": "***", "api_key_env": "OPENAI_API_KEY", "max_tokens": 5
    }  # fmt: skip
    assert out["list"][1:] == [1.5, None] and list(out["failed"].values()) == [3]
