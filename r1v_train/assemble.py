"""Projector transfer (Skywork R1V, DESIGN §1.1): a vision-language model from a vision encoder,
a reasoning LLM and a new MLP projector, in transformers' own InternVL classes.

`assemble` builds `InternVLForConditionalGeneration` around the two pretrained parts: the vision
tower's features are pixel-shuffled (ratio 0.5, four patches into one token) and projected by
LayerNorm → Linear → GELU → Linear into the LLM's embedding space. Only the projector is new
(seeded). The LLM's tokenizer gains the `<image>` token, and the saved folder loads with
`AutoModelForImageTextToText` and `AutoProcessor`.

`swap_llm` is the paper's re-assembly: the vision tower and the trained projector of one model,
copied bit for bit, onto another LLM with the same hidden size (its weights and tokenizer).

`freeze` applies a training policy: `projector` (the paper's first stage), `projector+vision`, or
`all` (everything trains).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1v_data.errors import ConfigError

IMAGE_TOKEN = "<image>"  # in the text, one per image; the processor repeats it per context token
POLICIES = ("projector", "projector+vision", "all")
# Assembled models keep their LLM's chat template, behind a prefix that turns content parts into
# text first (most LLM templates expect string contents): each image becomes `<image>`, which the
# processor expands into the image's context tokens. LLMs without a template get a ChatML one.
_PARTS_AS_TEXT = (
    "{%- set ns = namespace(messages=[]) -%}{%- for m in messages -%}"
    "{%- if m['content'] is string -%}{%- set ns.messages = ns.messages + [m] -%}{%- else -%}"
    "{%- set text = namespace(s='') -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}{%- set text.s = text.s + '<image>\\n' -%}"
    "{%- elif p['type'] == 'text' -%}{%- set text.s = text.s + p['text'] -%}{%- endif -%}{%- endfor -%}"
    "{%- set ns.messages = ns.messages + [{'role': m['role'], 'content': text.s}] -%}{%- endif -%}"
    "{%- endfor -%}{%- set messages = ns.messages -%}"
)
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Assembly:
    out: str
    vision: str
    llm: str
    hidden_size: int
    image_size: int
    image_seq_length: int
    parameters: dict[str, int]
    policies: dict[str, dict[str, int]]  # the counts under each freeze policy

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def assemble(vision: str, llm: str, out: Path, *, image_size: int | None = None, seed: int = 0) -> Assembly:
    """A new vision-language model: `vision`'s tower, `llm`, and a seeded new projector."""
    import torch
    from transformers import AutoModel

    tower = _vision_tower(_load("--vision", vision, AutoModel.from_pretrained))
    lm, tokenizer = _load_llm(llm)
    size = image_size or _tower_image_size(tower.config)
    torch.manual_seed(seed)
    model = _build(tower.config, lm.config, tokenizer, size)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    _load_language_model(model, lm)
    _save(model, tokenizer, size, out, {"vision": vision, "llm": llm, "projector_seed": seed})
    return _describe(model, out, vision, llm, size)


def swap_llm(vlm: Path, llm: str, out: Path) -> Assembly:
    """`vlm`'s vision tower and projector (copied exactly) onto `llm` with its tokenizer."""
    from transformers import AutoModelForImageTextToText

    old = _load("--swap-llm", str(vlm), AutoModelForImageTextToText.from_pretrained)
    lm, tokenizer = _load_llm(llm)
    if lm.config.hidden_size != old.config.text_config.hidden_size:
        raise ConfigError(
            f"{llm} has hidden size {lm.config.hidden_size}; the projector of {vlm} maps into "
            f"{old.config.text_config.hidden_size}: re-assembly needs the same hidden size"
        )
    size = _image_size(vlm, old.config)
    model = _build(old.config.vision_config, lm.config, tokenizer, size)
    model.model.vision_tower.load_state_dict(old.model.vision_tower.state_dict())
    model.model.multi_modal_projector.load_state_dict(old.model.multi_modal_projector.state_dict())
    _load_language_model(model, lm)
    _save(model, tokenizer, size, out, {"swapped_from": str(vlm), "llm": llm})
    return _describe(model, out, str(vlm), llm, size)


def freeze(model: Any, policy: str) -> dict[str, int]:
    """Set `requires_grad` by policy; returns trainable and total parameter counts."""
    if policy not in POLICIES:
        raise ConfigError(f"freeze policy {policy!r}: choose one of {', '.join(POLICIES)}")
    trainable = {"projector": ("multi_modal_projector.",),
                 "projector+vision": ("multi_modal_projector.", "vision_tower.")}.get(policy)  # fmt: skip
    for name, param in model.named_parameters():
        param.requires_grad = trainable is None or any(part in name for part in trainable)
    return parameter_counts(model)


def parameter_counts(model: Any) -> dict[str, int]:
    counts = {"total": 0, "trainable": 0, "projector": 0, "vision": 0, "language": 0}
    for name, param in model.named_parameters():
        n = param.numel()
        counts["total"] += n
        counts["trainable"] += n if param.requires_grad else 0
        part = ("projector" if "multi_modal_projector." in name
                else "vision" if "vision_tower." in name else "language")  # fmt: skip
        counts[part] += n
    return counts


# ---------------------------------------------------------------------------------------- parts
def _vision_tower(model: Any) -> Any:
    """The InternViT of a checkpoint: a bare `InternVLVisionModel`, or the tower of an InternVL.
    Other encoders (CLIP, SigLIP) build, but InternVL's checkpoint key mapping does not reload
    them, so they are refused rather than saved broken."""
    tower = getattr(getattr(model, "model", model), "vision_tower", model)
    if getattr(tower.config, "model_type", None) != "internvl_vision":
        raise ConfigError(
            f"vision encoder of type {tower.config.model_type!r}: use an InternViT, i.e. an "
            "InternVLVisionModel or a transformers-native InternVL checkpoint such as OpenGVLab/InternVL3-1B-hf"
        )
    return tower


def _load(flag: str, name: str, loader: Any, **kwargs: Any) -> Any:
    """Load a model part; what the user can fix (a wrong path, a wrong kind of model) in one line."""
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        raise ConfigError(f"{flag} {name}: cannot be loaded as that part ({reason})") from exc


def _tower_image_size(config: Any) -> int:
    size = config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _load_llm(llm: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = _load("--llm", llm, AutoModelForCausalLM.from_pretrained)
    tokenizer = _load(
        "--llm", llm, AutoTokenizer.from_pretrained, extra_special_tokens={"image_token": IMAGE_TOKEN}
    )
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def _build(vision_config: Any, text_config: Any, tokenizer: Any, image_size: int) -> Any:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    patch = vision_config.patch_size
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    grid = image_size // patch
    if grid % 2:
        raise ConfigError(
            f"image size {image_size} gives a {grid}x{grid} patch grid: pixel shuffle needs it even"
        )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(grid // 2) ** 2,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",  # InternViT's CLS token is dropped before the shuffle
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    return InternVLForConditionalGeneration(config)


def _load_language_model(model: Any, lm: Any) -> None:
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    if model.config.tie_word_embeddings:
        model.tie_weights()


def _image_size(vlm: Path, config: Any) -> int:
    meta = Path(vlm) / "r1v_assembly.json"
    size = json.loads(meta.read_text()).get("image_size") if meta.is_file() else None
    return int(size or _tower_image_size(config.vision_config))


def _save(model: Any, tokenizer: Any, image_size: int, out: Path, provenance: dict[str, Any]) -> None:
    """The model and a processor that loads offline without torchvision: InternVL's own processor
    needs torchvision (its video slot), so a `LlavaProcessor` with a PIL image processor expands
    each `<image>` into the `image_seq_length` context tokens the model fills (one tile per image)."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    side = int(model.config.image_seq_length**0.5)  # context tokens per side after the shuffle
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=image_size // side,
        vision_feature_select_strategy="full",
        image_token=IMAGE_TOKEN,
        chat_template=_PARTS_AS_TEXT + (tokenizer.chat_template or _CHATML),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {**provenance, "image_size": image_size, "image_seq_length": model.config.image_seq_length,
            "projector": "pixel shuffle 0.5; LayerNorm, Linear, GELU, Linear"}  # fmt: skip
    (out / "r1v_assembly.json").write_text(json.dumps(meta, indent=2) + "\n")


def _describe(model: Any, out: Path, vision: str, llm: str, size: int) -> Assembly:
    policies = {policy: freeze(model, policy) for policy in POLICIES}  # "all" last: the model trains whole
    return Assembly(str(out), vision, llm, model.config.text_config.hidden_size, size,
                    model.config.image_seq_length, policies["all"], policies)  # fmt: skip
