"""Secrets out of everything r1v stores or prints: error snippets, URLs, configs, manifests.

A server may echo the Authorization header into an error body, and a user may write a key into a
URL (`openai:http://user:KEY@host/v1#m`) or a config value. `redact` removes what looks like a
credential from a text; `redact_value` does it through a JSON-like value (dict keys included, and
the whole value of a key named like a secret, e.g. `api_key`). Redaction only ever shortens a
secret to `***`; it never raises.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
_MIN_SECRET = 8  # shorter environment values ("1", "true") would mask ordinary text

_PATTERNS = [
    # Authorization header values, as a server may echo them ("Basic" only capitalised: the word
    # is common in prose)
    (re.compile(r"(?i)\b(bearer)(\s+)[^\s'\",;}\]]{8,}"), rf"\1\2{MASK}"),
    (re.compile(r"\b(Basic)(\s+)[A-Za-z0-9+/]{8,}=*"), rf"\1\2{MASK}"),
    # key shapes: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Hugging Face (hf_), GitHub, Google
    (re.compile(r"(?<![\w-])(?:sk-ant-|sk-|hf_|gh[pousr]_|github_pat_|AIza)[\w-]{16,}"), MASK),
    # URL userinfo: keep the user name, drop the password (a lone user part may be a token)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]*):[^/\s]*@"), rf"\1\2:{MASK}@"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+@"), rf"\1{MASK}@"),
    # query and form values: api_key=..., token=..., access_token=...; the bare names `key` and
    # `sig` only in a URL's query, where "KEY=VALUE" in prose cannot be meant
    (
        re.compile(
            r"(?i)(\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|client[_-]?secret|secret|password"
            r"|passwd)=)[^&#\s'\"]+"
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)([?&](?:key|sig|signature)=)[^&#\s'\"]+"), rf"\1{MASK}"),
]
_SECRET_ENV = re.compile(r"(?i)(?:^|_)(?:api_?key|key|token|secret|password|passwd|credentials?)$")
_SECRET_FIELD = re.compile(
    r"(?i)^(?:api[_-]?key|token|access[_-]?token|auth[_-]?token|hf[_-]?token|secret|password|authorization)$"
)


def redact(text: str, *secrets: str | None) -> str:
    """`text` without credentials: the given `secrets`, the values of key-like environment
    variables (OPENAI_API_KEY, HF_TOKEN, ...), bearer tokens, key shapes, URL passwords and
    key-like query values."""
    for secret in [*secrets, *_env_secrets()]:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_value(value: Any) -> Any:
    """`value` (dicts, lists, strings, scalars) with every string redacted, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_key(k): _field(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def _key(key: Any) -> Any:
    return redact(key) if isinstance(key, str) else key


def _field(key: Any, value: Any) -> Any:
    # `api_key: sk-...` hides the value whatever its shape; `api_key_env: NAME` is only a name
    if isinstance(key, str) and isinstance(value, str) and value and _SECRET_FIELD.match(key):
        return MASK
    return redact_value(value)


def _env_secrets() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET]
