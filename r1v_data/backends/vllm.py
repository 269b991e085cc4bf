"""`vllm:MODEL` — vLLM's offline engine: images as multi-modal data, per-request sampling.

Requests are handed to the engine in chunks (default 256) so results stream back into trace
parts as each chunk finishes; vLLM schedules within a chunk with continuous batching. Every
request carries its own SamplingParams (DRLC's per-sample repetition penalty, its own seed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from r1v_data.backends.base import BackendError, GenRequest, GenResult
from r1v_data.backends.hf import PLAIN_STOP
from r1v_data.backends.prompts import plain_completion_text
from r1v_data.config import model_identity
from r1v_data.errors import MissingExtraError


class VLLMBackend:
    prefills = True  # the assistant prefix is part of the rendered prompt

    def __init__(self, model: str, *, spec: str | None = None, chunk_size: int = 256, **engine_args: Any):
        # vLLM logs to stdout by default, which would corrupt `--json` output: send it to stderr.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm") from exc
        self.spec = spec or f"vllm:{model}"
        self.identity = spec or model_identity("vllm", model)
        self.chunk_size = chunk_size
        try:
            self.llm = LLM(model=model, **engine_args)
        except Exception as exc:  # vLLM raises many types for a model it cannot serve
            raise BackendError(f"vLLM cannot load {model}: {str(exc).splitlines()[0]}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        config = self.llm.llm_engine.model_config
        self.supports_images = bool(getattr(config, "is_multimodal_model", False))
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, request: GenRequest) -> str:
        if not self.chat:
            return plain_completion_text(request.messages, request.assistant_prefix)
        turns = []
        for m in request.messages:
            parts: list[dict[str, Any]] = [{"type": "image"} for _ in m.images]
            turns.append(
                {"role": m.role, "content": [*parts, {"type": "text", "text": m.text}]}
                if m.images
                else {"role": m.role, "content": m.text}
            )
        text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return text + request.assistant_prefix

    def generate(self, requests: Iterable[GenRequest]) -> Iterator[GenResult]:
        it = iter(requests)
        while chunk := list(islice(it, self.chunk_size)):
            yield from self._chunk(chunk)

    def close(self) -> None:
        import gc

        self.llm = None  # type: ignore[assignment]
        gc.collect()  # the engine holds its KV cache (RAM on CPU) until collected

    def _chunk(self, chunk: list[GenRequest]) -> list[GenResult]:
        start = time.perf_counter()
        try:
            outputs = self.llm.generate(
                [self._prompt(r) for r in chunk], [self._params(r) for r in chunk], use_tqdm=False
            )
        except Exception as exc:  # vLLM validation/engine errors have many types; isolate, never crash
            if len(chunk) == 1:
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                return [GenResult(chunk[0].request_id, finish_reason="error", error=msg)]
            # one bad request (e.g. a prompt over max_model_len) fails the whole call: isolate it
            return [res for r in chunk for res in self._chunk([r])]
        latency = (time.perf_counter() - start) / len(chunk)
        return [self._result(r, out, latency) for r, out in zip(chunk, outputs, strict=True)]

    def _prompt(self, request: GenRequest) -> dict[str, Any]:
        from r1v_data.readers.images import rgb_image

        text = self.render(request)
        images = [rgb_image(b) for m in request.messages for b in m.images]
        if not images:
            # token ids: a chat template already holds BOS, which tokenising the text would double
            return {"prompt_token_ids": self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]}
        return {"prompt": text, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}

    def _params(self, request: GenRequest) -> Any:
        from vllm import SamplingParams

        s = request.sampling
        extra: dict[str, Any] = {"top_k": s.top_k} if s.top_k else {}
        if not self.chat:  # a base model's next question ends its answer, as in hf:
            extra["stop"] = [PLAIN_STOP]
        return SamplingParams(
            n=1,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            repetition_penalty=s.repetition_penalty,
            seed=s.seed,
            **extra,
        )

    @staticmethod
    def _result(request: GenRequest, out: Any, latency: float) -> GenResult:
        completion = out.outputs[0]
        return GenResult(
            request.request_id,
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=len(out.prompt_token_ids or []),
            completion_tokens=len(completion.token_ids),
            latency_s=latency,
        )
