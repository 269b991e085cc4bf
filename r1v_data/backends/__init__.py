"""Backends by spec string: `builtin`, `hf:MODEL`, `openai:URL#MODEL`, `vllm:MODEL`, and the
provider batch APIs `openai-batch:URL#MODEL`, `anthropic-batch:MODEL` (`batch/`)."""

from __future__ import annotations

from typing import Any

from r1v_data.backends.base import (
    Backend,
    BackendError,
    BatchesPending,
    GenRequest,
    GenResult,
    Message,
    Sampling,
)
from r1v_data.errors import ConfigError

__all__ = [
    "Backend",
    "BackendError",
    "BatchesPending",
    "GenRequest",
    "GenResult",
    "Message",
    "Sampling",
    "attach_store",
    "make_backend",
]

SPEC_HELP = (
    "builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL | openai-batch:URL#MODEL | anthropic:MODEL | "
    "anthropic-batch:MODEL"
)
BATCH_KINDS = ("openai-batch", "anthropic-batch")


def is_batch_spec(spec: str | None) -> bool:
    """A spec naming a provider batch API (which takes `wait`, `poll_interval_s`)."""
    return bool(spec) and spec.partition(":")[0] in BATCH_KINDS


def attach_store(backend: Backend | None, store: Any, run_id: str) -> None:
    """Let a batch backend record its batch ids in `store` under `run_id` (and resume the batches
    recorded there); other backends keep nothing in the store."""
    use_store = getattr(backend, "use_store", None)
    if use_store is not None:
        use_store(store, run_id)


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
    if kind in BATCH_KINDS and rest:
        return _batch(kind, rest, spec, options)
    if kind == "anthropic" and rest:
        from r1v_data.backends.anthropic import AnthropicBackend

        return AnthropicBackend(rest, spec=spec, **options)
    if kind == "vllm" and rest:
        from r1v_data.backends.vllm import VLLMBackend

        return VLLMBackend(rest, **options)
    raise ConfigError(f"unknown teacher {spec!r}; expected {SPEC_HELP}")


def _batch(kind: str, rest: str, spec: str, options: dict[str, Any]) -> Backend:
    from r1v_data.backends.batch.core import BatchBackend, options_for_batch

    mine, wire = options_for_batch(dict(options))
    if kind == "openai-batch":
        from r1v_data.backends.batch.openai_batch import OpenAIBatchAdapter

        url, sep, model = rest.partition("#")
        if not sep or not model:
            raise ConfigError(
                f"teacher {spec!r}: write openai-batch:URL#MODEL, e.g. openai-batch:https://api.openai.com/v1#gpt-4o"
            )
        return BatchBackend(OpenAIBatchAdapter(url, model, **wire), spec=spec, **mine)
    from r1v_data.backends.batch.anthropic_batch import AnthropicBatchAdapter

    return BatchBackend(AnthropicBatchAdapter(rest, **wire), spec=spec, **mine)
