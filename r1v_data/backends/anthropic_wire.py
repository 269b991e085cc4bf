"""Anthropic's Messages API wire format as r1v writes and reads it (the online `anthropic:`
backend and `anthropic-batch:` share it): system turns go to the top-level `system`, images are
base64 `image` blocks before the text, the assistant prefix (`<think>\\n`) is prefilled as a
final assistant turn without its trailing whitespace (the API refuses a final turn ending in
whitespace; the model continues it), and with `thinking_budget` extended thinking is asked for
and its `thinking` blocks come back inside `<think>…</think>`.

Sampling maps to `temperature`, `top_k` and `max_tokens`; `top_p` is not sent (newer models refuse
temperature and top_p together) nor `repetition_penalty` (the API has none). With thinking on,
temperature and top_k are left out and nothing is prefilled, as the API requires.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from r1v_data.backends.base import GenRequest, GenResult
from r1v_data.backends.openai_wire import image_mime, int_or_none

API_VERSION = "2023-06-01"
DEFAULT_URL = "https://api.anthropic.com/v1"


def headers(api_key: str | None) -> dict[str, str]:
    out = {"anthropic-version": API_VERSION, "Content-Type": "application/json"}
    if api_key:
        out["x-api-key"] = api_key
    return out


def body(request: GenRequest, model: str, *, prefill: bool, thinking_budget: int | None,
         inline_images: bool = True) -> dict[str, Any]:  # fmt: skip
    s = request.sampling
    system = "\n\n".join(m.text for m in request.messages if m.role == "system")
    messages = [{"role": m.role, "content": _content(m.text, m.images, inline_images)}
                for m in request.messages if m.role != "system"]  # fmt: skip
    out: dict[str, Any] = {"model": model, "max_tokens": s.max_tokens, "messages": messages}
    if system:
        out["system"] = system
    if thinking_budget:
        out["thinking"] = {"type": "enabled", "budget_tokens": int(thinking_budget)}
        return out
    out["temperature"] = s.temperature
    if s.top_k is not None:
        out["top_k"] = s.top_k
    if prefill and request.assistant_prefix.strip():
        # the API refuses a final assistant turn that ends in whitespace: "<think>\n" goes as "<think>"
        messages.append({"role": "assistant", "content": request.assistant_prefix.rstrip()})
    return out


def _content(text: str, images: list[bytes], inline: bool) -> str | list[dict[str, Any]]:
    if not images:
        return text
    blocks: list[dict[str, Any]] = [{"type": "image", "source": _source(img, inline)} for img in images]
    return [*blocks, {"type": "text", "text": text}]


def _source(data: bytes, inline: bool) -> dict[str, str]:
    if inline:
        return {
            "type": "base64",
            "media_type": image_mime(data),
            "data": base64.b64encode(data).decode("ascii"),
        }
    return {"type": "base64", "media_type": image_mime(data), "sha256": hashlib.sha256(data).hexdigest()}


def parse(rid: str, message: Any, prefilled: bool) -> GenResult:
    """A `message` object (online reply, or a batch's succeeded result) as a result."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return GenResult(rid, finish_reason="error", error="malformed message (no content blocks)")
    blocks = [b for b in message["content"] if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    thinking = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
    if thinking:
        opener = "" if prefilled else "<think>\n"
        text = f"{opener}{thinking}\n</think>\n\n{text}"
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    return GenResult(
        rid,
        text=text,
        finish_reason="length" if message.get("stop_reason") == "max_tokens" else "stop",
        prompt_tokens=int_or_none(usage.get("input_tokens")),
        completion_tokens=int_or_none(usage.get("output_tokens")),
    )


def error_message(error: Any) -> tuple[str, bool]:
    """An `error` response's message, and whether it is about the request itself (not sent again)."""
    inner = error.get("error") if isinstance(error, dict) else None
    if not isinstance(inner, dict):
        return "errored without a reason", False
    kind = str(inner.get("type"))
    return f"{kind}: {inner.get('message')}", kind in (
        "invalid_request_error",
        "not_found_error",
        "permission_error",
    )
