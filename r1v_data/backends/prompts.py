"""Versioned prompt templates: a sample becomes teacher messages and an assistant prefix.

R1V's teacher writes `<think>…</think>` then the answer; the assistant turn starts with
`<think>\\n` where the backend can prefill it, and the final answer is asked for in `\\boxed{}`.
Changing any text here changes every request id, so each change bumps `PROMPT_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1v_data.backends.base import Message

PROMPT_VERSION = "r1v-prompt/1"
REVISE_VERSION = "r1v-revise/1"
THINK_PREFIX = "<think>\n"

_FREE_FORM = (
    "Think through the problem step by step inside <think> </think> tags. After </think>, "
    "give only the final answer in \\boxed{}."
)
_CHOICE = (
    "Think through the problem step by step inside <think> </think> tags. After </think>, "
    "give only the letter of the correct option in \\boxed{}, for example \\boxed{B}."
)
IMAGE_POLICIES = ("caption", "refuse")


@dataclass
class Prompt:
    messages: list[Message]
    assistant_prefix: str
    refusal: str | None = None  # why this teacher cannot answer the sample (recorded, not dropped)


def visible_question(
    sample: dict[str, Any], *, supports_images: bool, image_policy: str = "caption", who: str = "teacher"
) -> tuple[str, list[bytes], str | None]:
    """The question as a model can see it, its images, and why it cannot (or None).

    A text-only model given an image question gets the sample's caption in place of the images
    when `image_policy` is "caption" and a caption exists; otherwise it refuses with a reason
    (naming `who`), so the image is never dropped silently.
    """
    images = [im["bytes"] for im in sample.get("images") or []]
    question = sample["question"]
    if images and not supports_images:
        caption = (sample.get("caption") or "").strip()
        if image_policy != "caption":
            return "", [], f"text-only {who} and image_policy={image_policy!r}"
        if not caption:
            return "", [], f"text-only {who} and the sample has images but no caption"
        return f"Description of the image(s): {caption}\n\n{question}", [], None
    return question, images, None


def build_prompt(sample: dict[str, Any], *, supports_images: bool, image_policy: str = "caption") -> Prompt:
    """The teacher prompt for one stored sample (images as in `visible_question`)."""
    question, images, refusal = visible_question(
        sample, supports_images=supports_images, image_policy=image_policy
    )
    if refusal:
        return _refused(refusal)
    instruction = _CHOICE if sample.get("options") else _FREE_FORM
    return Prompt([Message("user", f"{question}\n\n{instruction}", images)], THINK_PREFIX)


def _refused(reason: str) -> Prompt:
    return Prompt([], THINK_PREFIX, refusal=reason)


# Base models continue text rather than follow instructions: one worked example shows the format.
_ONE_SHOT = (
    "Question: A box holds 3 red balls and 5 blue balls. How many balls are in the box?\n\n"
    f"{_FREE_FORM}\n\nAnswer: <think>\nThere are 3 red balls and 5 blue balls. 3 + 5 = 8.\n</think>\n"
    "\\boxed{8}\n\n"
)


def plain_completion_text(messages: list[Message], assistant_prefix: str) -> str:
    """A prompt for base models with no chat template (such as the builtin Gemma 3 270M)."""
    turns = [m.text for m in messages if m.role != "assistant"]
    return _ONE_SHOT + "Question: " + "\n\n".join(turns) + "\n\nAnswer: " + assistant_prefix


_REVISE = (
    "Below are a problem, its reference answer, and a solution attempt that reached a wrong answer. "
    "Write a corrected solution: reason step by step inside <think> </think> tags, keeping what was "
    "right in the attempt and fixing what was wrong, so that the reasoning genuinely leads to the "
    "reference answer. After </think>, give only the final answer in \\boxed{{}}.\n\n"
    "Problem:\n{question}\n\nReference answer: {answer}\n\nAttempt:\n{attempt}"
)


def build_revision_prompt(
    sample: dict[str, Any], attempt: str, *, supports_images: bool, image_policy: str = "caption"
) -> Prompt:
    """A judge's prompt to rewrite a wrong trace so it reaches the reference answer (multi-stage
    self-distillation's revision step). Images are handled as in `build_prompt`."""
    question, images, refusal = visible_question(
        sample, supports_images=supports_images, image_policy=image_policy
    )
    if refusal:
        return _refused(refusal)
    body = _REVISE.format(question=question, answer=sample.get("answer"), attempt=attempt.strip())
    return Prompt([Message("user", body, images)], THINK_PREFIX)


def parts_text(parts: Any) -> str:
    """The text of a message's content parts (`{"type": "text", "text": ...}`), images left out."""
    return "".join(p.get("text") or "" for p in parts if p.get("type") == "text")
