"""Tiny real models built on the fly (random weights, a real trained tokenizer), for tests that
need a model but not a good one. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<image>{% endif %}{% endfor %}{% endif %}"
    "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus() -> list[str]:
    from r1v_data.readers.sources import bundled_sample_dir

    lines = (bundled_sample_dir() / "sample.jsonl").read_text().splitlines()
    return [
        *lines,
        "<think> </think> \\boxed{42} Question: Answer: step by step 0123456789 + - = .",
    ] * 4


def _tokenizer(extra: list[str], **kwargs: Any) -> Any:
    """A 512-token byte-level BPE trained on the bundled sample, with the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>", "<|end|>", *extra],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", **kwargs)  # fmt: skip


def build_tiny_llama(out: Path, *, chat: bool = True, seed: int = 0) -> Path:
    """A 2-layer Llama (head size 64, as vLLM's CPU kernels require) with a 512-token BPE."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = _tokenizer([])
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = [
        fast.eos_token_id,
        fast.convert_tokens_to_ids("<|end|>"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def build_tiny_reward_model(base: Path, out: Path, *, num_labels: int, seed: int = 1) -> Path:
    """The tiny Llama's tokenizer and config under a random sequence-classification head, with
    no pad token in the config (as many causal-LM reward models ship)."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForSequenceClassification

    shutil.copytree(base, out)
    config = AutoConfig.from_pretrained(base)
    config.num_labels, config.pad_token_id = num_labels, None
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(out)
    return out


# Image parts render as the processor's image token; the assistant turn, its end marker included,
# sits in {% generation %} so that assistant-only loss masks (TRL's `assistant_only_loss`) work.
VLM_CHAT_TEMPLATE = (
    "{% macro render(content) %}{% if content is string %}{{ content }}{% else %}{% for p in content %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<image>{% endif %}{% endfor %}{% endif %}"
    "{% endmacro %}{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ render(m['content']) }}<|end|>{% endgeneration %}"
    "{% else %}{{ render(m['content']) }}<|end|>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VLM_IMAGE_SIZE = 56  # pixels; 14-pixel patches, a 4x4 grid, 2x2 after InternVL's pixel shuffle
VLM_IMAGE_TOKENS = 4  # placeholder tokens per image


def build_tiny_vlm(out: Path, seed: int = 0) -> Path:
    """A tiny InternVL (`InternVLForConditionalGeneration`: a 1-layer InternViT, R1V's projector
    LayerNorm -> Linear -> GELU -> Linear after a 0.5 pixel shuffle, and a 2-layer Qwen2 with head
    size 64) with a processor that `AutoProcessor.from_pretrained(out)` loads offline.

    The processor is a `LlavaProcessor`, not an `InternVLProcessor`: in transformers 5.x every
    processor with a `video_processor` slot (InternVL's included) needs torchvision to be built
    or loaded, and this venv has none. `LlavaProcessor` with a PIL image processor expands each
    `<image>` to the 4 placeholder tokens the model fills with one 56x56 image's features, so the
    pair trains and generates like an InternVL checkpoint would (one tile per image)."""
    import torch
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    fast = _tokenizer(["<image>"], extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = VLM_CHAT_TEMPLATE
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": VLM_IMAGE_SIZE},
        crop_size={"height": VLM_IMAGE_SIZE, "width": VLM_IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=fast,
        patch_size=VLM_IMAGE_SIZE // int(VLM_IMAGE_TOKENS**0.5),  # tokens per side after the shuffle
        vision_feature_select_strategy="full",  # counts every token: no CLS to subtract here
        chat_template=VLM_CHAT_TEMPLATE,
        image_token="<image>",
    )
    image_token_id = fast.convert_tokens_to_ids("<image>")
    end_id = fast.convert_tokens_to_ids("<|end|>")
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": VLM_IMAGE_SIZE,
            "patch_size": 14,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(fast),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "max_position_embeddings": 4096,
            "bos_token_id": fast.bos_token_id,
            "eos_token_id": fast.eos_token_id,
            "pad_token_id": fast.pad_token_id,
            "tie_word_embeddings": True,
        },
        image_token_id=image_token_id,
        image_seq_length=VLM_IMAGE_TOKENS,
        downsample_ratio=0.5,
        vision_feature_select_strategy="default",  # InternViT's CLS token is dropped before the shuffle
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [fast.eos_token_id, end_id]
    model.generation_config.pad_token_id = fast.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_vit(out: Path, seed: int = 0) -> Path:
    """A 1-layer InternViT (InternVL's vision tower) for 56-pixel images in 14-pixel patches."""
    import torch
    from transformers import InternVLVisionConfig, InternVLVisionModel

    torch.manual_seed(seed)
    config = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, image_size=VLM_IMAGE_SIZE, patch_size=14)  # fmt: skip
    InternVLVisionModel(config).save_pretrained(out)
    return out


def build_tiny_llava(out: Path, seed: int = 0) -> Path:
    """A tiny LLaVA (a 1-layer CLIP vision tower, 56-pixel images in 14-pixel patches: 16 image
    tokens; a 2-layer Llama with head size 64) that vLLM's CPU build serves, with a `LlavaProcessor`
    on a PIL image processor. Its vision weights are saved under the `vision_tower.vision_model.`
    names vLLM loads (transformers 5 writes them without `vision_model.`)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    fast = _tokenizer(["<image>"], extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = VLM_CHAT_TEMPLATE
    size, patch = VLM_IMAGE_SIZE, 14
    images = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=patch, image_token="<image>",
                               vision_feature_select_strategy="default", chat_template=VLM_CHAT_TEMPLATE)  # fmt: skip
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": size, "patch_size": patch,
                       "projection_dim": 64},
        text_config={"model_type": "llama", "vocab_size": len(fast), "hidden_size": 128, "intermediate_size": 256,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 64,
                     "max_position_embeddings": 2048, "bos_token_id": fast.bos_token_id,
                     "eos_token_id": fast.eos_token_id, "pad_token_id": fast.pad_token_id},
        image_token_index=fast.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(size // patch) ** 2,
    )  # fmt: skip
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    weights = out / "model.safetensors"
    tensors = {_vllm_vision_name(k): v for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    return out


def _vllm_vision_name(key: str) -> str:
    tower = "vision_tower."
    if key.startswith(tower) and not key.startswith(tower + "vision_model."):
        return tower + "vision_model." + key[len(tower) :]
    return key
