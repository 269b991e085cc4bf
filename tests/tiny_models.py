"""Tiny real models built on the fly (random weights, a real trained tokenizer), for tests that
need a model but not a good one. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<image>{% endif %}{% endfor %}{% endif %}"
    "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus() -> list[str]:
    from r1v_data.sources import bundled_sample_dir

    lines = (bundled_sample_dir() / "sample.jsonl").read_text().splitlines()
    return [
        *lines,
        "<think> </think> \\boxed{42} Question: Answer: step by step 0123456789 + - = .",
    ] * 4


def build_tiny_llama(out: Path, *, chat: bool = True, seed: int = 0) -> Path:
    """A 2-layer Llama (head size 64, as vLLM's CPU kernels require) with a 512-token BPE."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
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
