"""The `vllm:` backend inside a Ray actor, on CPU: the plumbing of `--executor ray` with vLLM
engines as the actor pool (one engine per actor), checked on a machine without a GPU.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python bench/vllm_ray_actor.py
    PYTHONPATH=bench/cpu_vllm_shim VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python bench/vllm_ray_actor.py --vlm

Builds a tiny random-weight model (tests/tiny_models.py), ingests problems, and runs the same
`generate` twice on copies of one store: in this process and on a local 2-CPU Ray cluster with
one actor holding the engine. Prints both runs' counts and whether they made the same request ids
and texts. `.venv-vllm` has vLLM's CPU build and the `ray` extra.

Without --vlm: a chat Llama on the bundled sample (text). With --vlm: a tiny LLaVA on MATH-Vision
problems with their real images (../shared/data), so the `vllm:` image path runs: each trace's
prompt token count is printed beside the token count of its rendered text, the difference being
the image's tokens. vLLM's multimodal models import torchvision, which `.venv-vllm` lacks:
`bench/cpu_vllm_shim` (first on PYTHONPATH) stands in for it and makes transformers use its PIL
image processors.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tiny_models import build_tiny_llama, build_tiny_llava  # noqa: E402

from r1v_data.config import GenerateConfig, IngestConfig  # noqa: E402
from r1v_data.stages.generate import run_generate  # noqa: E402
from r1v_data.stages.ingest import run_ingest  # noqa: E402
from r1v_data.store import Store  # noqa: E402

# on CPU, gpu_memory_utilization is the share of RAM the engine reserves: two engines must fit
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.1}


SHARED = Path(os.environ.get("R1V_SHARED", REPO.parent / "shared")) / "data"


def rows(store: Path) -> dict[str, tuple]:
    con = Store.open(store).connect()
    try:
        sql = "SELECT request_id, text, prompt_tokens, completion_tokens, prompt FROM traces"
        return {r[0]: r[1:] for r in con.sql(sql).fetchall()}
    finally:
        con.close()


def run(store: Path, model: Path, executor: dict) -> None:
    cfg = GenerateConfig(store=store, teacher=f"vllm:{model}", teacher_options=ENGINE, limit=6, n=2,
                         sampling={"max_tokens": 16, "temperature": 1.0}, executor=executor)  # fmt: skip
    start = time.perf_counter()
    result = run_generate(cfg)
    print(f"{executor['kind']:5}: {result.sent} sent, failed {dict(result.failed)}, "
          f"{result.prompt_tokens} prompt + {result.completion_tokens} completion tokens, "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip


def image_tokens(model: Path, traces: dict[str, tuple]) -> list[str]:
    """Each trace's prompt tokens as the engine counted them, beside its rendered text's tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return [
        f"{t[1]} (text {len(tokenizer(t[3], add_special_tokens=False)['input_ids'])})"
        for t in traces.values()
    ]


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    vlm = "--vlm" in sys.argv
    import ray

    with tempfile.TemporaryDirectory(prefix="r1v-vllm-ray-") as tmp:
        model = (build_tiny_llava if vlm else build_tiny_llama)(Path(tmp) / "model")
        local, on_ray = Path(tmp) / "local", Path(tmp) / "ray"
        source = str(SHARED / "mathv_testmini" / "testmini.jsonl") if vlm else "builtin:sample"
        run_ingest(IngestConfig(store=local, sources=[source]))
        shutil.copytree(local, on_ray)
        run(local, model, {"kind": "local"})
        ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        run(on_ray, model, {"kind": "ray", "actors": 1, "num_cpus": 1})
        mine, theirs = rows(local), rows(on_ray)
        if vlm:
            print("prompt tokens of the image traces:", ", ".join(image_tokens(model, theirs)))
        parts = [p.name for p in (on_ray / "traces").iterdir() if "-b" in p.name]
        print(f"same request ids: {set(mine) == set(theirs)} ({len(mine)}), same texts and token counts: "
              f"{mine == theirs}; parts written by the actor: {parts}")  # fmt: skip


if __name__ == "__main__":
    main()
