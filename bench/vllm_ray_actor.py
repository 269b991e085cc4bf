"""The `vllm:` backend inside a Ray actor, on CPU: the plumbing of `--executor ray` with vLLM
engines as the actor pool (one engine per actor), checked on a machine without a GPU.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python bench/vllm_ray_actor.py

Builds a tiny random-weight chat Llama (tests/tiny_models.py), ingests the bundled sample, and
runs the same `generate` twice on copies of one store: in this process and on a local 2-CPU Ray
cluster with one actor holding the engine. Prints both runs' counts and whether they made the
same request ids and texts. `.venv-vllm` has vLLM's CPU build and the `ray` extra.
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

from tiny_models import build_tiny_llama  # noqa: E402

from r1v_data.config import GenerateConfig, IngestConfig  # noqa: E402
from r1v_data.stages.generate import run_generate  # noqa: E402
from r1v_data.stages.ingest import run_ingest  # noqa: E402
from r1v_data.store import Store  # noqa: E402

# on CPU, gpu_memory_utilization is the share of RAM the engine reserves: two engines must fit
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.1}


def rows(store: Path) -> dict[str, tuple]:
    con = Store.open(store).connect()
    try:
        sql = "SELECT request_id, text, prompt_tokens, completion_tokens FROM traces"
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


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import ray

    with tempfile.TemporaryDirectory(prefix="r1v-vllm-ray-") as tmp:
        model = build_tiny_llama(Path(tmp) / "model")
        local, on_ray = Path(tmp) / "local", Path(tmp) / "ray"
        run_ingest(IngestConfig(store=local, sources=["builtin:sample"]))
        shutil.copytree(local, on_ray)
        run(local, model, {"kind": "local"})
        ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        run(on_ray, model, {"kind": "ray", "actors": 1, "num_cpus": 1})
        mine, theirs = rows(local), rows(on_ray)
        parts = [p.name for p in (on_ray / "traces").iterdir() if "-b" in p.name]
        print(f"same request ids: {set(mine) == set(theirs)} ({len(mine)}), same texts and token counts: "
              f"{mine == theirs}; parts written by the actor: {parts}")  # fmt: skip


if __name__ == "__main__":
    main()
