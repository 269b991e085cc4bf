"""Backends by spec string: `builtin`, `hf:MODEL`, `openai:URL#MODEL`, `vllm:MODEL`."""

from __future__ import annotations

from typing import Any

from r1v_data.backends.base import Backend, BackendError, GenRequest, GenResult, Message, Sampling
from r1v_data.errors import ConfigError

__all__ = [
    "Backend",
    "BackendError",
    "GenRequest",
    "GenResult",
    "Message",
    "Sampling",
    "make_backend",
]

SPEC_HELP = "builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL"


def make_backend(spec: str, **options: Any) -> Backend:
    """Build the backend a spec names; options are passed to its constructor."""
    try:
        return _make(spec, **options)
    except TypeError as exc:  # an option the backend does not take
        raise ConfigError(f"teacher {spec!r}: bad teacher option ({exc})") from None


def _make(spec: str, **options: Any) -> Backend:
    kind, _, rest = spec.partition(":")
    if spec == "builtin":
        from r1v_data.backends.builtin import BuiltinBackend

        return BuiltinBackend(**options)
    if kind == "hf" and rest:
        from r1v_data.backends.hf import HFBackend

        return HFBackend(rest, **options)
    if kind == "openai" and rest:
        from r1v_data.backends.openai_compat import OpenAIBackend

        url, sep, model = rest.partition("#")
        if not sep or not model:
            raise ConfigError(
                f"teacher {spec!r}: write openai:URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#Qwen/QwQ-32B"
            )
        return OpenAIBackend(url, model, **options)
    if kind == "vllm" and rest:
        from r1v_data.backends.vllm import VLLMBackend

        return VLLMBackend(rest, **options)
    raise ConfigError(f"unknown teacher {spec!r}; expected {SPEC_HELP}")
