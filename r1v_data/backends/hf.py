"""`hf:MODEL` — a transformers causal LM or vision-language model, batched, on CPU or GPU.

Requests are batched by the sampling settings transformers applies per call (temperature,
top_p, top_k, max_tokens); the repetition penalty is applied per row, so DRLC's per-sample
penalties batch together. A checkpoint with a vision config (an `r1v-train` checkpoint, any
`AutoModelForImageTextToText` model with its processor) sees the images; a text LM gets image
questions as captions or refusals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from itertools import groupby, islice
from typing import Any

from r1v_data.backends.base import BackendError, GenRequest, GenResult
from r1v_data.backends.prompts import plain_completion_text
from r1v_data.config import model_identity
from r1v_data.readers.hub import looks_like_path

PLAIN_STOP = "\nQuestion:"  # a base model's next question ends its answer


class HFBackend:
    supports_images = False
    prefills = True  # the assistant prefix is part of the rendered prompt

    def __init__(
        self,
        model: str,
        *,
        spec: str | None = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "float32",
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoConfig

        if threads:  # on a CPU shared with other work, one thread beats two that wait on each other
            torch.set_num_threads(threads)
        if looks_like_path(model) and not os.path.exists(os.path.expanduser(model)):
            raise BackendError(
                f"cannot load hf:{model}: no model folder at {model} (a Hub model is named ORG/NAME)"
            )
        self.spec = spec or f"hf:{model}"
        # the model, not how its path was typed: ./m and /abs/m are the same teacher
        self.identity = spec or model_identity("hf", model)
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.supports_images = hasattr(AutoConfig.from_pretrained(model), "vision_config")
            self._load(model, getattr(torch, dtype))
        except (OSError, ValueError, AttributeError) as exc:  # missing files, bad dtype name
            raise BackendError(f"cannot load {self.spec}: {str(exc).splitlines()[0]}") from exc
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = bool(getattr(self.processor or self.tokenizer, "chat_template", None))
        self._eos = _eos_ids(self.model, self.tokenizer)

    def _load(self, model: str, dtype: Any) -> None:
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        if self.supports_images:
            self.processor = AutoProcessor.from_pretrained(model)
            self.tokenizer = self.processor.tokenizer
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)

    def render(self, request: GenRequest) -> str:
        if any(m.images for m in request.messages) and not self.supports_images:
            raise BackendError(
                f"{self.spec} is text-only; the prompt builder should have captioned the images"
            )
        if not self.chat:
            return plain_completion_text(request.messages, request.assistant_prefix)
        if self.supports_images:  # images first, as content parts the processor's template renders
            turns = [{"role": m.role, "content": [*({"type": "image"} for _ in m.images), {"type": "text", "text": m.text}]}
                     for m in request.messages]  # fmt: skip
            text = self.processor.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        else:
            turns = [{"role": m.role, "content": m.text} for m in request.messages]
            text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return text + request.assistant_prefix

    def generate(self, requests: Iterable[GenRequest]) -> Iterator[GenResult]:
        it = iter(requests)
        while chunk := list(islice(it, self.batch_size)):
            for _, group in groupby(sorted(chunk, key=_batch_key), key=_batch_key):
                yield from self._generate_batch(list(group))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]

    # ---- one batch -------------------------------------------------------------------------
    def _generate_batch(self, batch: list[GenRequest]) -> list[GenResult]:
        start = time.perf_counter()
        try:
            outputs, prompt_lens = self._run(batch)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory, prompt too long
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return [GenResult(r.request_id, finish_reason="error", error=reason) for r in batch]
        latency = (time.perf_counter() - start) / len(batch)
        results = []
        for req, row, plen in zip(batch, outputs, prompt_lens, strict=True):
            ids = row.tolist()
            # a finished row is padded to the batch's length: cut at its first eos or pad
            end = next(
                (i for i, t in enumerate(ids) if t in self._eos or t == self.tokenizer.pad_token_id), None
            )
            kept = ids[:end] if end is not None else ids
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            stopped = end is not None
            if not self.chat and PLAIN_STOP in text:
                text, stopped = text.split(PLAIN_STOP, 1)[0], True
                kept = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # count what is kept
            results.append(
                GenResult(
                    req.request_id,
                    text=text,
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=int(plen),
                    completion_tokens=len(kept),
                    latency_s=latency,
                )
            )
        return results

    def _run(self, batch: list[GenRequest]) -> tuple[Any, list[int]]:
        import torch
        from transformers import GenerationConfig

        texts = [self.render(r) for r in batch]
        if self.processor is not None:  # the images of every row, in order: each fills its <image>
            from r1v_data.readers.images import rgb_image

            images = [rgb_image(b) for r in batch for m in r.messages for b in m.images]
            enc = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                                 add_special_tokens=not self.chat)  # fmt: skip
        else:
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        enc = enc.to(self.device)
        s = batch[0].sampling
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._eos),
        }
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        penalties = [r.sampling.repetition_penalty for r in batch]
        if any(p != 1.0 for p in penalties):
            kwargs["logits_processor"] = [RowRepetitionPenalty(penalties, self.tokenizer.pad_token_id)]
        if not self.chat:
            kwargs.update(stop_strings=[PLAIN_STOP], tokenizer=self.tokenizer)
        if s.seed is not None:
            torch.manual_seed(s.seed)  # per batch (its first request's seed), not per row
        # A fresh GenerationConfig: the model's own defaults (a repetition_penalty of 1.05 in
        # Qwen's, say) must not leak into what the trace records as its sampling.
        config = GenerationConfig(
            **{k: v for k, v in kwargs.items() if k not in ("logits_processor", "tokenizer")}
        )
        extra = {k: v for k, v in kwargs.items() if k in ("logits_processor", "tokenizer")}
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, **extra)
        width = enc["input_ids"].shape[1]
        # left padding: every row's prompt ends at `width`; the generated tokens follow it
        return out[:, width:], [int(n) for n in enc["attention_mask"].sum(dim=1)]


def _batch_key(r: GenRequest) -> tuple[Any, ...]:
    # not the seed: the n samples of a problem differ only by it and must batch together
    s = r.sampling
    return (s.temperature, s.top_p, s.top_k or 0, s.max_tokens)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


class RowRepetitionPenalty:
    """transformers' repetition penalty with one value per batch row (DRLC sets it per sample):
    logits of tokens already in the row are divided by p when positive, multiplied when negative."""

    def __init__(self, penalties: list[float], pad_token_id: int | None):
        self.penalties, self.pad_token_id = penalties, pad_token_id

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        p = torch.tensor(self.penalties, dtype=scores.dtype, device=scores.device).unsqueeze(1)
        seen = torch.gather(scores, 1, input_ids)
        penalised = scores.scatter(1, input_ids, torch.where(seen < 0, seen * p, seen / p))
        if self.pad_token_id is not None:  # left padding is not text the row repeated
            penalised[:, self.pad_token_id] = scores[:, self.pad_token_id]
        return penalised
