"""`anthropic:MODEL` (or `anthropic:URL#MODEL`): Anthropic's Messages API, online.

It is the `openai:` client (its event loop, bounded concurrency, budgets, retries and give-up
rules, see `openai_compat.py`) with Anthropic's wire format (`anthropic_wire.py`): POST
{URL}/messages with `x-api-key` and `anthropic-version`. 529 (overloaded) is a 5xx and retried.
"""

from __future__ import annotations

import json
from typing import Any

from r1v_data.backends import anthropic_wire as wire
from r1v_data.backends.base import GenRequest, GenResult
from r1v_data.backends.openai_compat import OpenAIBackend, _Attempt, _Sent, encode_json
from r1v_data.backends.openai_wire import body_snippet


class AnthropicBackend(OpenAIBackend):
    def __init__(self, rest: str, *, spec: str, prefill: bool = True, thinking_budget: int | None = None,
                 api_key_env: str = "ANTHROPIC_API_KEY", **options: Any):  # fmt: skip
        url, sep, model = rest.rpartition("#")
        self.thinking_budget = thinking_budget
        super().__init__(url if sep else wire.DEFAULT_URL, model, spec=spec, api_key_env=api_key_env,
                         prefill=bool(prefill) and not thinking_budget, **options)  # fmt: skip
        self.identity = f"anthropic:{model}"
        for endpoint in self.endpoints.all:
            endpoint.path = "/messages"
        self._headers = wire.headers(self._api_key)

    def body(self, request: GenRequest, *, inline_images: bool = True) -> dict[str, Any]:
        out = wire.body(request, self.model, prefill=self.prefill, thinking_budget=self.thinking_budget,
                        inline_images=inline_images)  # fmt: skip
        out.update(self.extra_body)
        return out

    def _body_pieces(self, request: GenRequest, inline_images: bool) -> tuple[str, str, str]:
        # the whole body each time: openai:'s messages-encoded-once splice knows only its own layout
        return encode_json(self.body(request, inline_images=inline_images), inline_images), "", ""

    def _parse(self, req: _Sent, raw: bytes) -> GenResult | _Attempt:
        try:
            data = json.loads(raw)
        except ValueError:
            return _Attempt(f"malformed response (not JSON): {body_snippet(raw)}", transient=True)
        result = wire.parse(req.request_id, data, self.prefill and bool(req.assistant_prefix))
        if result.error:
            return _Attempt(f"{result.error}: {body_snippet(raw)}", transient=True)
        return result
